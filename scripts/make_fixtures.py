#!/usr/bin/env python3
"""Generate jetc's committed ONNX import fixtures: tiny random Llama / Qwen2 decoders
exported by every exporter a user is likely to hand jetc, plus onnxruntime reference
outputs.

Setup (CPU only; PyPI's torch wheel is a ~3 GB CUDA build that also runs on CPU):

    python3.11 -m venv ~/.cache/jetc/venv-export
    # cache the wheels once, then install offline from the cache:
    ~/.cache/jetc/venv-export/bin/pip download -d ~/.cache/jetc/wheels \
        -r scripts/requirements-fixtures.txt
    ~/.cache/jetc/venv-export/bin/pip install --no-index \
        --find-links ~/.cache/jetc/wheels -r scripts/requirements-fixtures.txt

Optional, for the `optimum` variant only (optimum-onnx 0.1.0 pins transformers<4.58,
which conflicts with transformers 5.x, so it lives in a second venv):

    python3.11 -m venv ~/.cache/jetc/venv-optimum
    ~/.cache/jetc/venv-optimum/bin/pip install --find-links ~/.cache/jetc/wheels \
        torch==2.15.0 onnx==1.23.2 onnxruntime==1.32.0 optimum-onnx==0.1.0 numpy
    (resolves transformers 4.57.x, optimum 2.x)

Run (about 3-5 minutes on 2 cores):

    ~/.cache/jetc/venv-export/bin/python scripts/make_fixtures.py --out tests/fixtures
    ~/.cache/jetc/venv-export/bin/python scripts/make_fixtures.py --out tests/fixtures \
        --only llama-dynamo-opset23-sdpa-kv      # or a variant name for both families

Each fixture directory tests/fixtures/<family>-<variant>/ holds:
    model.onnx [+ model.onnx.data]     the exported graph
    <case>.inputs.npz                  every graph input, by graph input name
    <case>.outputs.npz                 every graph output, by graph output name, from
                                       onnxruntime CPU with graph optimizations disabled
    meta.json                          dims, opset, op set, case shapes, notes
The .npz files are uncompressed (ZIP_STORED) with fixed timestamps so reruns are
byte-identical. Every case is also checked against the torch model (max abs diff
must be <= 1e-4, it is ~1e-7 in practice).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
import zipfile
from pathlib import Path

import numpy as np

SEED = 1234
TOL = 1e-4
PERTURB_STD = 0.1

DIMS = dict(layers=2, hidden=64, heads=4, kv_heads=2, head_dim=16, vocab=128, intermediate=96)

# Reference cases: name -> (batch, seq, past).  Decode-only graphs (seq fixed to 1) use
# DECODE_CASES instead; graphs without cache inputs use only "past0".
CASES = {"past0": (2, 5, 0), "past3": (2, 4, 3)}
DECODE_CASES = {"past0": (2, 1, 0), "past3": (2, 1, 3)}
# com.microsoft::GroupQueryAttention on CPU rejects seq > 1 with a non-empty past unless batch == 1
# ("batch_size must be 1 when sequence_length > 1 and past context is given").
GQA_CASES = {"past0": (2, 5, 0), "past3": (1, 4, 3), "decode3": (2, 1, 3)}

DEFAULT_OPTIMUM_PYTHON = os.path.expanduser("~/.cache/jetc/venv-optimum/bin/python")


# --------------------------------------------------------------------------------------
# models


def make_config(family: str, attn: str | None):
    import transformers

    common = dict(
        hidden_size=DIMS["hidden"],
        intermediate_size=DIMS["intermediate"],
        num_hidden_layers=DIMS["layers"],
        num_attention_heads=DIMS["heads"],
        num_key_value_heads=DIMS["kv_heads"],
        head_dim=DIMS["head_dim"],
        vocab_size=DIMS["vocab"],
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    if family == "llama":
        cfg = transformers.LlamaConfig(rope_theta=10000.0, tie_word_embeddings=False, **common)
    elif family == "qwen2":
        cfg = transformers.Qwen2Config(rope_theta=1e6, tie_word_embeddings=True, use_sliding_window=False, **common)
    elif family == "qwen3":
        # per-head q/k RMSNorm before RoPE
        cfg = transformers.Qwen3Config(rope_theta=1e6, tie_word_embeddings=True, use_sliding_window=False, **common)
    elif family == "phi":
        # Phi-2 style: LayerNorm, parallel attention + GELU MLP, partial rotary (half the head)
        cfg = transformers.PhiConfig(rope_theta=10000.0, partial_rotary_factor=0.5, tie_word_embeddings=False, **common)
    elif family == "gemma2":
        # score soft-capping, (1 + w) RMSNorms around attention and MLP, GELU-tanh MLP,
        # embedding scaling; eager attention only (transformers has no sdpa path for it)
        cfg = transformers.Gemma2Config(rope_theta=10000.0, query_pre_attn_scalar=16, attn_logit_softcapping=50.0,
                                        final_logit_softcapping=30.0, sliding_window=64, **common)
    elif family == "olmo2":
        # q/k RMSNorm over the whole projection, norms after attention and MLP (post-norm)
        cfg = transformers.Olmo2Config(rope_theta=10000.0, tie_word_embeddings=False, **common)
    else:
        raise ValueError(family)
    if attn is not None:
        cfg._attn_implementation = attn
    return cfg


def make_model(family: str, attn: str = "sdpa"):
    """The family's model: seeded init, then every parameter perturbed (so no two initializers
    are equal and the exporter cannot merge them). Identical weights for every variant."""
    import torch
    import transformers

    torch.manual_seed(SEED)
    cfg = make_config(family, attn)
    cls = {
        "llama": transformers.LlamaForCausalLM,
        "qwen2": transformers.Qwen2ForCausalLM,
        "qwen3": transformers.Qwen3ForCausalLM,
        "olmo2": transformers.Olmo2ForCausalLM,
        "phi": transformers.PhiForCausalLM,
        "gemma2": transformers.Gemma2ForCausalLM,
    }[family]
    model = cls(cfg)
    gen = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32) * PERTURB_STD
            if "norm" in name:
                p.copy_(1.0 + noise)
            else:
                p.add_(noise)
    model.set_attn_implementation(attn)
    model.eval()
    assert model.config._attn_implementation == attn, model.config._attn_implementation
    if family in TIED:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model


def save_hf_dir(family: str, path: Path):
    """save_pretrained the perturbed model plus a tiny word-level tokenizer (the genai builder
    and optimum both insist on loading a tokenizer)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    model = make_model(family, "sdpa")
    model.save_pretrained(str(path))
    vocab = {f"<t{i}>": i for i in range(DIMS["vocab"])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<t0>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<t1>", eos_token="<t2>", unk_token="<t0>", pad_token="<t0>"
    )
    tok.save_pretrained(str(path))


# --------------------------------------------------------------------------------------
# cases


def case_tensors(family: str, batch: int, seq: int, past: int):
    """Deterministic case data (same for every variant of a family)."""
    fam_off = {"llama": 0, "qwen2": 100, "qwen3": 200, "olmo2": 300, "phi": 400, "gemma2": 500}[family]
    rng = np.random.default_rng(SEED + fam_off + 7 * past + seq)
    ids = rng.integers(0, DIMS["vocab"], size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, past + seq), dtype=np.int64)
    pos = np.broadcast_to(np.arange(past, past + seq, dtype=np.int64), (batch, seq)).copy()
    kv = []
    for _ in range(DIMS["layers"]):
        k = rng.standard_normal((batch, DIMS["kv_heads"], past, DIMS["head_dim"])).astype(np.float32)
        v = rng.standard_normal((batch, DIMS["kv_heads"], past, DIMS["head_dim"])).astype(np.float32)
        kv.append((k, v))
    return dict(input_ids=ids, attention_mask=mask, position_ids=pos, past=kv)


def torch_reference(model, data, with_cache: bool):
    """{"logits": ..., ("key", i): ..., ("value", i): ...} from the torch model."""
    import torch
    from transformers import DynamicCache

    with torch.no_grad():
        kwargs = dict(
            input_ids=torch.from_numpy(data["input_ids"]),
            attention_mask=torch.from_numpy(data["attention_mask"]),
            position_ids=torch.from_numpy(data["position_ids"]),
        )
        if with_cache:
            cache = DynamicCache(
                ddp_cache_data=[(torch.from_numpy(k.copy()), torch.from_numpy(v.copy())) for k, v in data["past"]]
            )
            out = model(**kwargs, past_key_values=cache, use_cache=True)
            res = {"logits": out.logits.numpy()}
            for i, layer in enumerate(out.past_key_values.layers):
                res[("key", i)] = layer.keys.numpy()
                res[("value", i)] = layer.values.numpy()
        else:
            out = model(**kwargs, use_cache=False)
            res = {"logits": out.logits.numpy()}
    return res


_LAYER_RE = re.compile(r"(\d+)")


def classify(name: str):
    """Map a graph input/output name to what it holds:
    'input_ids' | 'attention_mask' | 'position_ids' | 'logits' | (kind, layer)."""
    if name in ("input_ids", "attention_mask", "position_ids", "logits"):
        return name
    last = name.split(".")[-1].lower()
    nums = _LAYER_RE.findall(name)
    if len(nums) == 1 and ("key" in last or "value" in last):
        return ("key" if "key" in last else "value", int(nums[0]))
    raise KeyError(f"don't know what graph value {name!r} holds")


# --------------------------------------------------------------------------------------
# file helpers


def savez_deterministic(path: Path, arrays: dict):
    """Like np.savez (uncompressed), but with fixed zip timestamps so reruns are byte-identical."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)


def save_onnx(proto, path: Path, external: bool):
    """Inline, or every float initializer in one external file `model.onnx.data`.

    Integer initializers (shape constants: Reshape shapes, Unsqueeze axes, ...) stay inline:
    with plain size_threshold=0 onnxruntime refuses to load the model ("[ShapeInferenceError]
    Cannot parse data from external tensors" for an Unsqueeze axes constant)."""
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data, write_external_data_tensors

    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
    if not external:
        onnx.save(proto, str(path))
        return
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    convert_model_to_external_data(
        proto, all_tensors_to_one_file=True, location=data.name, size_threshold=0, convert_attribute=False
    )
    for t in proto.graph.initializer:
        if t.data_type != onnx.TensorProto.FLOAT:
            del t.external_data[:]
            t.data_location = onnx.TensorProto.DEFAULT
    proto = write_external_data_tensors(proto, str(path.parent))
    onnx.save(proto, str(path))
    os.chmod(data, 0o644)


def strip_local_paths(proto) -> int:
    """Drop the dynamo exporter's per-node `pkg.torch.onnx.stack_trace` metadata: it holds absolute
    paths of this machine (non-reproducible) and is ~60% of a tiny model's bytes. The other
    metadata_props (namespace, class_hierarchy, fx_node, name_scopes) are kept."""
    n = 0
    graphs = [proto.graph] + [f for f in proto.functions]
    for g in graphs:
        for node in g.node:
            keep = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
            if len(keep) != len(node.metadata_props):
                n += 1
                del node.metadata_props[:]
                node.metadata_props.extend(keep)
    return n


def load_inline(path: Path):
    """Load a model and pull any external data into the proto."""
    import onnx

    return onnx.load(str(path), load_external_data=True)


def value_info_json(v):
    import onnx

    t = v.type.tensor_type
    dims = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            dims.append(d.dim_value)
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)).name
    return {"name": v.name, "dtype": dtype, "shape": dims}


# --------------------------------------------------------------------------------------
# exporters.  Each returns (onnx ModelProto, info dict) where info has keys:
#   exporter, has_kv_cache, cases (dict name -> (b, s, p)), notes, attn


def _dynamo_wrapper(model, with_kv: bool):
    import torch
    from transformers import DynamicCache

    class KV(torch.nn.Module):
        """input_ids, attention_mask, position_ids, past (flat list k0, v0, k1, v1, ...) ->
        logits, present k0, v0, ...; the DynamicCache is built from the tensors."""

        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, position_ids, past):
            cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)])
            out = self.m(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
            )
            res = [out.logits]
            for layer in out.past_key_values.layers:
                res += [layer.keys, layer.values]
            return tuple(res)

    class NoKV(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    return KV(model) if with_kv else NoKV(model)


def kv_io_names():
    ins = ["input_ids", "attention_mask", "position_ids"]
    outs = ["logits"]
    for i in range(DIMS["layers"]):
        ins += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
        outs += [f"present.{i}.key", f"present.{i}.value"]
    return ins, outs


def export_dynamo(family, opset, attn, kv):
    import torch

    model = make_model(family, attn)
    w = _dynamo_wrapper(model, kv)
    b, s, p = 2, 4, 3  # example shapes: past > 1 and seq > 1 to avoid 0/1 specialization
    data = case_tensors(family, b, s, p)
    Dim = torch.export.Dim
    batch, seq, past = Dim("batch"), Dim("sequence_length"), Dim("past_sequence_length")
    if kv:
        args = (
            torch.from_numpy(data["input_ids"]),
            torch.from_numpy(data["attention_mask"]),
            torch.from_numpy(data["position_ids"]),
            [torch.from_numpy(t) for kvp in data["past"] for t in kvp],
        )
        dyn = {
            "input_ids": {0: batch, 1: seq},
            # the mask's length is past+seq; torch.export can't state a sum of two Dims, so AUTO
            "attention_mask": {0: batch, 1: Dim.AUTO},
            "position_ids": {0: batch, 1: seq},
            "past": [{0: batch, 2: past}] * (2 * DIMS["layers"]),
        }
        ins, outs = kv_io_names()
    else:
        args = (torch.from_numpy(data["input_ids"]), torch.ones(b, s, dtype=torch.int64))
        dyn = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
        ins, outs = ["input_ids", "attention_mask"], ["logits"]
    prog = torch.onnx.export(
        w,
        args,
        dynamo=True,
        opset_version=opset,
        dynamic_shapes=dyn,
        input_names=ins,
        output_names=outs,
        verbose=False,
    )
    notes = (
        f"torch.onnx.export(dynamo=True, opset_version={opset}, optimize=True default) of a thin nn.Module wrapper "
        f"around {type(model).__name__} (attn_implementation={attn!r}) "
        + (
            "that builds a transformers DynamicCache from flat past tensors and returns logits + the updated cache "
            "tensors; input/output names set with input_names/output_names. Dynamic dims: batch, sequence_length, "
            "past_sequence_length named; attention_mask length Dim.AUTO (shows up as an sNN symbol). Exported with "
            "example batch 2, seq 4, past 3."
            if kv
            else "taking input_ids + attention_mask only, use_cache=False, returning logits."
        )
    )
    return prog.model_proto, dict(
        exporter="torch.onnx.export(dynamo=True)",
        has_kv_cache=kv,
        cases=CASES if kv else {"past0": CASES["past0"]},
        notes=notes,
        attn=attn,
        model=model,
    )


def export_legacy(family, opset, attn):
    import torch
    import warnings

    model = make_model(family, attn)
    w = _dynamo_wrapper(model, True)

    class Flat(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, position_ids, *past):
            return self.inner(input_ids, attention_mask, position_ids, list(past))

    b, s, p = 2, 4, 3
    data = case_tensors(family, b, s, p)
    args = (
        torch.from_numpy(data["input_ids"]),
        torch.from_numpy(data["attention_mask"]),
        torch.from_numpy(data["position_ids"]),
        *[torch.from_numpy(t) for kvp in data["past"] for t in kvp],
    )
    ins, outs = kv_io_names()
    axes = {
        "input_ids": {0: "batch_size", 1: "sequence_length"},
        "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
        "position_ids": {0: "batch_size", 1: "sequence_length"},
        "logits": {0: "batch_size", 1: "sequence_length"},
    }
    for n in ins[3:]:
        axes[n] = {0: "batch_size", 2: "past_sequence_length"}
    for n in outs[1:]:
        axes[n] = {0: "batch_size", 2: "total_sequence_length"}
    with tempfile.TemporaryDirectory() as td, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(td) / "model.onnx"
        torch.onnx.export(
            Flat(w),
            args,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=ins,
            output_names=outs,
            dynamic_axes=axes,
            do_constant_folding=True,
        )
        proto = load_inline(path)
    notes = (
        f"Legacy TorchScript exporter: torch.onnx.export(dynamo=False, opset_version={opset}, dynamic_axes=...). "
        f"transformers 5 models take a Cache object, not tuples, so the model is wrapped in an nn.Module taking "
        f"flat past tensors (*past: k0, v0, k1, v1) that builds a DynamicCache inside forward; the trace "
        f"records the tensors the cache holds. attn_implementation={attn!r}. Traced with batch 2, seq 4, past 3 "
        f"(Python branches on q_length > 1 were taken at trace time; the graph still runs for any seq/past)."
    )
    return proto, dict(
        exporter="torch.onnx.export(dynamo=False)", has_kv_cache=True, cases=CASES, notes=notes, attn=attn,
        model=model,
    )


def export_transformers(family, mode):
    """mode: 'plain' | 'ortfused' (decode graph, seq 1) | 'ortfused-prefill' (no past inputs)."""
    import onnx_ir
    import torch
    from transformers import DynamicCache
    from transformers.exporters import OnnxConfig, OnnxExporter

    attn = "sdpa"
    model = make_model(family, attn)
    if mode == "plain":
        b, s, p, cases = 2, 4, 3, CASES
    elif mode == "ortfused":
        b, s, p, cases = 2, 1, 3, DECODE_CASES
    else:
        b, s, p, cases = 2, 5, 0, {"past0": CASES["past0"]}
    data = case_tensors(family, b, s, p)
    inputs = dict(
        input_ids=torch.from_numpy(data["input_ids"]),
        attention_mask=torch.from_numpy(data["attention_mask"]),
        position_ids=torch.from_numpy(data["position_ids"]),
    )
    if p > 0:
        inputs["past_key_values"] = DynamicCache(
            ddp_cache_data=[(torch.from_numpy(k.copy()), torch.from_numpy(v.copy())) for k, v in data["past"]]
        )
    inputs["use_cache"] = True
    fusions = None if mode == "plain" else "cpu"
    exported = OnnxExporter().export(model, inputs, OnnxConfig(dynamic=True, ort_fusions=fusions))
    proto = onnx_ir.to_proto(exported.program)
    # The exporter keeps weights as external tensors in memory only when loaded from disk; here they
    # are in memory already.  Round-trip through a temp dir to be safe about external refs.
    with tempfile.TemporaryDirectory() as td:
        exported.save_pretrained(td)
        proto = load_inline(Path(td) / "model.onnx")
    base = (
        "transformers.exporters.OnnxExporter().export(model, forward_kwargs, OnnxConfig(dynamic=True"
        + (", ort_fusions='cpu'" if fusions else "")
        + f")) on {type(model).__name__} (attn_implementation='sdpa'); forward kwargs input_ids, attention_mask, "
        "position_ids" + (", past_key_values=DynamicCache" if p > 0 else "") + ", use_cache=True. "
        "dynamic=True marks every axis Dim.AUTO, so dims come out as sNN symbols, fixed sizes sometimes as digit "
        "strings ('2', '16'), and the attention_mask batch symbol can differ from input_ids'. Saved by "
        "save_pretrained (model.onnx + model.onnx.data), re-saved here with weights inline."
    )
    if mode == "ortfused":
        base += (
            " This is the DECODE graph: exported with seq 1, which torch.export specializes, so the query length "
            "is fixed to 1 (cases past0/past3 are batch 2, seq 1, past 0/3). The exporter's CPU fusion only turns "
            "attention over a growing cache into com.microsoft::GroupQueryAttention for a single-token query (or "
            "a batch fixed to 1); with a dynamic query length it leaves Softmax attention (and the RotaryEmbedding/"
            "SkipSimplifiedLayerNormalization fusions only). GQA inputs seqlens_k/total_sequence_length are "
            "computed inside the graph from shapes; the mask also goes in as attention_bias."
        )
    elif mode == "ortfused-prefill":
        base += (
            " This is the PREFILL graph: no past inputs (present outputs only), dynamic batch and sequence; "
            "attention fused into com.microsoft::GroupQueryAttention with empty past."
        )
    return proto, dict(
        exporter="transformers.exporters.OnnxExporter" + ("(ort_fusions='cpu')" if fusions else ""),
        has_kv_cache=p > 0,
        cases=cases,
        notes=base,
        attn=attn,
        model=model,
    )


def export_genai(family, workdir: Path):
    hf = workdir / f"hf-{family}"
    if not hf.exists():
        save_hf_dir(family, hf)
    out = workdir / f"genai-{family}"
    cache = workdir / f"genai-cache-{family}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-m", str(hf), "-o", str(out),
           "-p", "fp32", "-e", "cpu", "-c", str(cache)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("genai builder failed:\n" + r.stdout[-3000:] + r.stderr[-3000:])
    proto = load_inline(out / "model.onnx")
    extra = {"genai_config.json": (out / "genai_config.json").read_text()}
    notes = (
        "onnxruntime-genai model builder: python -m onnxruntime_genai.models.builder -m <save_pretrained dir> "
        "-o out -p fp32 -e cpu (the HF dir also holds a tiny WordLevel tokenizer; the builder refuses to run "
        "without one). Per layer: SimplifiedLayerNormalization/SkipSimplifiedLayerNormalization, one packed "
        "MatMul(qkv) -> com.microsoft::GroupQueryAttention(do_rotary=1, cos_cache/sin_cache initializers of "
        "max_position_embeddings rows) -> MatMul(o). No position_ids input: GQA derives positions from "
        "seqlens_k = ReduceSum(attention_mask)-1 and total_sequence_length = Shape(attention_mask)[1], both "
        "computed in-graph. Graph inputs list all past keys then all past values: match by name. Weights were "
        "in model.onnx.data; re-saved inline. genai_config.json copied alongside. Cases: past3 is batch 1 "
        "(GQA on CPU rejects seq > 1 with a non-empty past unless batch == 1), plus decode3 = batch 2, seq 1, "
        "past 3."
    )
    return proto, dict(
        exporter="onnxruntime_genai.models.builder", has_kv_cache=True, cases=GQA_CASES, notes=notes,
        attn="sdpa", model=make_model(family, "sdpa"), extra_files=extra,
    )


def export_optimum(family, workdir: Path, optimum_python: str):
    if not optimum_python or not Path(optimum_python).exists():
        raise RuntimeError(f"optimum venv python not found at {optimum_python!r}")
    hf = workdir / f"hf-{family}"
    if not hf.exists():
        save_hf_dir(family, hf)
    # transformers 5 writes rope_theta only inside "rope_parameters"; transformers 4.57 (optimum's) ignores
    # that key and silently falls back to rope_theta=10000 (Qwen2 then mismatches by ~1.0). Give 4.57 a copy
    # of the directory whose config.json also has the top-level key.
    hf4 = workdir / f"hf-{family}-v4"
    if not hf4.exists():
        shutil.copytree(hf, hf4)
        cfg = json.loads((hf4 / "config.json").read_text())
        cfg["rope_theta"] = cfg["rope_parameters"]["rope_theta"]
        (hf4 / "config.json").write_text(json.dumps(cfg, indent=2))
    hf = hf4
    out = workdir / f"optimum-{family}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [optimum_python, "-m", "optimum.exporters.onnx", "--model", str(hf), "--task",
           "text-generation-with-past", "--no-post-process", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if r.returncode != 0:
        raise RuntimeError("optimum export failed:\n" + r.stdout[-3000:] + r.stderr[-3000:])
    ver = subprocess.run(
        [optimum_python, "-c", "import importlib.metadata as m; print(*[p+'=='+m.version(p) for p in "
         "('optimum-onnx','optimum','transformers','torch')])"], capture_output=True, text=True
    ).stdout.strip()
    proto = load_inline(out / "model.onnx")
    notes = (
        "optimum-onnx export (python -m optimum.exporters.onnx --task text-generation-with-past "
        "--no-post-process) of the save_pretrained dir, run in a second venv because optimum-onnx 0.1.0 needs "
        f"transformers<4.58 ({ver}). optimum uses the legacy TorchScript exporter; weights re-saved inline. "
        "The config.json handed to it has a top-level rope_theta added: transformers 5 writes it only under "
        "rope_parameters, which 4.57 ignores (falling back to 10000)."
    )
    return proto, dict(
        exporter="optimum-onnx", has_kv_cache=True, cases=CASES, notes=notes, attn="sdpa",
        model=make_model(family, "sdpa"),
    )


# --------------------------------------------------------------------------------------
# variant table


def variants():
    """(variant name, builder(family, ctx) -> (proto, info), external_data)"""
    v = []
    for opset, attn, kv in [
        (18, "eager", True),
        (20, "sdpa", True),
        (20, "eager", False),
        (23, "sdpa", True),
        (24, "sdpa", True),
        (25, "eager", True),
    ]:
        name = f"dynamo-opset{opset}-{attn}-{'kv' if kv else 'nokv'}"
        v.append((name, lambda fam, ctx, o=opset, a=attn, k=kv: export_dynamo(fam, o, a, k), name == "dynamo-opset20-sdpa-kv"))
    v.append(("legacy-opset17-kv", lambda fam, ctx: export_legacy(fam, 17, "sdpa"), False))
    v.append(("transformers-exporter", lambda fam, ctx: export_transformers(fam, "plain"), False))
    v.append(("transformers-exporter-ortfused", lambda fam, ctx: export_transformers(fam, "ortfused"), False))
    v.append(("transformers-exporter-ortfused-prefill", lambda fam, ctx: export_transformers(fam, "ortfused-prefill"), False))
    v.append(("genai-builder", lambda fam, ctx: export_genai(fam, ctx["work"]), False))
    v.append(("optimum", lambda fam, ctx: export_optimum(fam, ctx["work"], ctx["optimum_python"]), False))
    return v


FAMILIES = ["llama", "qwen2", "qwen3", "olmo2", "phi", "gemma2"]
TIED = ("qwen2", "qwen3", "gemma2")
ROPE_THETA = {"llama": 10000.0, "qwen2": 1e6, "qwen3": 1e6, "olmo2": 10000.0, "phi": 10000.0, "gemma2": 10000.0}
# Families whose MLP is not SwiGLU (no `intermediate` read back by `jetc inspect`).
GELU_MLP = ("phi", "gemma2")
# The other families (q/k norms: Qwen3, OLMo2; partial rotary + LayerNorm + GELU: Phi) get
# three torch dynamo variants (decomposed sdpa with a cache, no cache, and the opset-23
# Attention op); the other exporters' support for them varies by version.
DYNAMO_FAMILIES = ("qwen3", "olmo2", "phi", "gemma2")
# Gemma 2 has eager attention only.
EAGER_ONLY = ("gemma2",)
EAGER_VARIANTS = ("dynamo-opset18-eager-kv", "dynamo-opset20-eager-nokv", "dynamo-opset25-eager-kv")
DYNAMO_VARIANTS = ("dynamo-opset20-sdpa-kv", "dynamo-opset20-eager-nokv", "dynamo-opset23-sdpa-kv")


# --------------------------------------------------------------------------------------
# driver


def run_variant(family, vname, builder, external, out_root: Path, ctx):
    import onnx
    import onnxruntime as ort

    proto, info = builder(family, ctx)
    model = info.pop("model")
    stripped = strip_local_paths(proto)
    d = out_root / f"{family}-{vname}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    path = d / "model.onnx"
    save_onnx(proto, path, external)
    try:
        onnx.checker.check_model(str(path))
        checker = "ok"
    except onnx.checker.ValidationError as e:
        # ORT-only ops in the default domain (SimplifiedLayerNormalization) are not ONNX ops.
        checker = "fails: " + str(e).strip().splitlines()[0]
        if "No Op registered" not in checker:
            raise
    for fname, text in info.pop("extra_files", {}).items():
        (d / fname).write_text(text)

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    in_names = [i.name for i in sess.get_inputs()]
    out_names = [o.name for o in sess.get_outputs()]
    has_past = any(isinstance(classify(n), tuple) for n in in_names)
    assert has_past == info["has_kv_cache"], (has_past, info["has_kv_cache"])

    max_diffs = {}
    case_shapes = {}
    for cname, (b, s, p) in info["cases"].items():
        data = case_tensors(family, b, s, p)
        feed = {}
        for n in in_names:
            c = classify(n)
            if isinstance(c, tuple):
                kind, layer = c
                feed[n] = data["past"][layer][0 if kind == "key" else 1]
            else:
                feed[n] = data[c]
        outs = sess.run(out_names, feed)
        ref = torch_reference(model, data, with_cache=True)
        worst = 0.0
        for n, o in zip(out_names, outs):
            c = classify(n)
            r = ref[c]
            if o.shape != r.shape:
                raise AssertionError(f"{family}-{vname} {cname} {n}: ort shape {o.shape} != torch {r.shape}")
            worst = max(worst, float(np.abs(o.astype(np.float64) - r.astype(np.float64)).max()))
        print(f"  {family}-{vname} {cname}: max |ort - torch| = {worst:.3g}")
        if not worst <= TOL:
            raise AssertionError(f"{family}-{vname} {cname}: ort vs torch max abs diff {worst} > {TOL}")
        max_diffs[cname] = worst
        case_shapes[cname] = {"batch": b, "seq": s, "past": p}
        savez_deterministic(d / f"{cname}.inputs.npz", feed)
        savez_deterministic(d / f"{cname}.outputs.npz", dict(zip(out_names, outs)))

    m = onnx.load(str(path), load_external_data=False)
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    ops = sorted({(n.domain, n.op_type) for n in m.graph.node})
    counts = {}
    for n in m.graph.node:
        k = f"{n.domain}::{n.op_type}" if n.domain else n.op_type
        counts[k] = counts.get(k, 0) + 1
    meta = {
        "family": family,
        "variant": vname,
        "exporter": info["exporter"],
        "opset": opset,
        "opset_imports": {o.domain or "ai.onnx": o.version for o in m.opset_import},
        **DIMS,
        "tied": family in TIED,
        "rope_theta": ROPE_THETA[family],
        "mlp": "gelu" if family in GELU_MLP else "swiglu",
        "rms_norm_eps": 1e-6,
        "attn_implementation": info["attn"],
        "external_data": external,
        "has_kv_cache": info["has_kv_cache"],
        "cases": list(info["cases"]),
        "case_shapes": case_shapes,
        "ort_vs_torch_max_abs_diff": max_diffs,
        "inputs": [value_info_json(v) for v in m.graph.input],
        "outputs": [value_info_json(v) for v in m.graph.output],
        "num_nodes": len(m.graph.node),
        "num_initializers": len(m.graph.initializer),
        "ops": [list(x) for x in ops],
        "op_counts": dict(sorted(counts.items())),
        "onnx_checker": checker,
        "notes": info["notes"]
        + (
            f" Stripped pkg.torch.onnx.stack_trace metadata_props from {stripped} nodes (absolute local paths)."
            if stripped
            else ""
        )
        + (
            " Saved with external data: every float initializer in model.onnx.data (onnx.save "
            "save_as_external_data, all_tensors_to_one_file, size_threshold=0), integer initializers "
            "kept inline because onnxruntime cannot shape-infer through external shape constants."
            if external
            else ""
        ),
    }
    (d / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return d.name


def write_manifest(out_root: Path):
    names = sorted(p.parent.name for p in out_root.glob("*/meta.json"))
    (out_root / "manifest.json").write_text(json.dumps({"variants": names}, indent=2) + "\n")
    return names


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures", type=Path)
    ap.add_argument("--only", action="append", default=[],
                    help="variant (e.g. dynamo-opset23-sdpa-kv), family (llama) or dir (llama-genai-builder); repeatable")
    ap.add_argument("--optimum-python", default=DEFAULT_OPTIMUM_PYTHON,
                    help="python of a venv with optimum-onnx (for the 'optimum' variant); '' to skip it")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(2)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args.out.mkdir(parents=True, exist_ok=True)

    selected = []
    for fam in FAMILIES:
        for vname, builder, external in variants():
            full = f"{fam}-{vname}"
            if args.only and not any(o in (fam, vname, full) for o in args.only):
                continue
            if vname == "optimum" and not args.optimum_python:
                continue
            if fam in DYNAMO_FAMILIES and vname not in (EAGER_VARIANTS if fam in EAGER_ONLY else DYNAMO_VARIANTS):
                continue
            selected.append((fam, vname, builder, external))
    if not selected:
        sys.exit(f"nothing matches --only {args.only}")

    failures = []
    with tempfile.TemporaryDirectory(prefix="jetc-fixtures-") as td:
        ctx = {"work": Path(td), "optimum_python": args.optimum_python}
        for fam, vname, builder, external in selected:
            print(f"== {fam}-{vname}", flush=True)
            try:
                run_variant(fam, vname, builder, external, args.out, ctx)
            except Exception as e:  # noqa: BLE001 - report and keep going
                traceback.print_exc()
                failures.append((f"{fam}-{vname}", f"{type(e).__name__}: {str(e)[:500]}"))
                shutil.rmtree(args.out / f"{fam}-{vname}", ignore_errors=True)

    names = write_manifest(args.out)
    print(f"\nmanifest: {len(names)} fixtures")
    if failures:
        print("FAILED:")
        for n, why in failures:
            print(f"  {n}: {why}")
        sys.exit(1)


if __name__ == "__main__":
    main()
