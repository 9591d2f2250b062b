#!/usr/bin/env python3
"""Independent PyTorch reference of the Jet-Nemotron decoder, written from the spec
(/work/shared/spec/jet-nemotron.md sections 1, 2 and 5), not from jetc's Rust code.

It reads a model in the Jet-Nemotron Hugging Face layout (`config.json` + `model.safetensors`,
parameter names of spec section 5, Linear weights stored [out, in]), runs ONE prefill from
empty caches with positions 0..T-1 and no padding, and writes the logits.

Usage:
    python scripts/jet_reference.py MODEL_DIR INPUT_IDS.npz OUT.npz
      MODEL_DIR      holds config.json and model.safetensors (e.g. from `jetc convert --format jet-hf`)
      INPUT_IDS.npz  has `input_ids` [B, T] (int64)
      OUT.npz        gets `logits` [B, T, vocab] (float32)

Needs torch and numpy (the safetensors file is parsed by hand, no `safetensors` package).
The fixture venv has both:
    ~/.cache/jetc/venv-export/bin/python scripts/jet_reference.py MODEL_DIR ids.npz out.npz
(set up as described in scripts/requirements-fixtures.txt). tests/jet_reference.rs runs it
through JETC_TORCH_PYTHON.

All math is float64: this is a reference, not a fast path.
"""
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

DT = torch.float64

# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------

_ST_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
}


def load_safetensors(path):
    """name -> float64 torch tensor. Format: u64 LE header length, JSON header
    {name: {dtype, shape, data_offsets: [begin, end]}} (offsets relative to the end of the
    header), then the raw little-endian bytes."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    data = blob[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        shape = info["shape"]
        raw = data[begin:end]
        if info["dtype"] == "BF16":
            u16 = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u16.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(_ST_DTYPES[info["dtype"]]).newbyteorder("<"))
        out[name] = torch.from_numpy(arr.astype(np.float64).reshape(shape).copy())
    return out


class Weights:
    def __init__(self, tensors):
        self.t = tensors
        self.used = set()

    def __call__(self, name):
        if name not in self.t:
            raise KeyError(f"model.safetensors has no `{name}`")
        self.used.add(name)
        return self.t[name]

    def get(self, name):
        if name in self.t:
            self.used.add(name)
            return self.t[name]
        return None


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------


def linear(x, w, b=None):
    """PyTorch Linear: w is [out, in]."""
    y = x @ w.T
    return y if b is None else y + b


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def silu(x):
    return x * torch.sigmoid(x)


def rotate_half(x):
    d = x.shape[-1] // 2
    return torch.cat([-x[..., d:], x[..., :d]], dim=-1)


def rope_cos_sin(T, head_dim, theta):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=DT) / head_dim))
    pos = torch.arange(T, dtype=DT)
    freqs = torch.outer(pos, inv_freq)  # [T, head_dim/2]
    emb = torch.cat([freqs, freqs], dim=-1)  # [T, head_dim]
    return emb.cos(), emb.sin()


def softmax_attention(x, W, pre, cfg, window):
    """GQA softmax attention with RoPE. window=None: causal; else each query sees itself and
    the previous window-1 keys."""
    B, T, _ = x.shape
    hq, hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // hq
    q = linear(x, W(pre + "q_proj.weight"), W.get(pre + "q_proj.bias")).view(B, T, hq, hd).transpose(1, 2)
    k = linear(x, W(pre + "k_proj.weight"), W.get(pre + "k_proj.bias")).view(B, T, hkv, hd).transpose(1, 2)
    v = linear(x, W(pre + "v_proj.weight"), W.get(pre + "v_proj.bias")).view(B, T, hkv, hd).transpose(1, 2)
    cos, sin = rope_cos_sin(T, hd, float(cfg["rope_theta"]))
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    rep = hq // hkv
    k = k.repeat_interleave(rep, dim=1)  # query head h uses kv head h // rep
    v = v.repeat_interleave(rep, dim=1)
    scores = (q @ k.transpose(-1, -2)) * hd**-0.5  # [B, hq, T, T]
    i = torch.arange(T).view(T, 1)
    j = torch.arange(T).view(1, T)
    visible = j <= i
    if window is not None:
        visible = visible & (j > i - window)
    scores = scores.masked_fill(~visible, float("-inf"))
    o = torch.softmax(scores, dim=-1) @ v  # [B, hq, T, hd]
    o = o.transpose(1, 2).reshape(B, T, hq * hd)
    return linear(o, W(pre + "o_proj.weight"), W.get(pre + "o_proj.bias"))


def l2_norm(x, eps=1e-6):
    return x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps)


def gated_delta_rule(q, k, v, g, beta):
    """q, k [B,T,H,dk]; v [B,T,H,dv]; g, beta [B,T,H]. Empty initial state. Recurrent form,
    per head and token: decay first, then the delta update, read after write."""
    B, T, H, dk = q.shape
    dv = v.shape[-1]
    S = torch.zeros(B, H, dk, dv, dtype=DT)
    o = torch.zeros(B, T, H, dv, dtype=DT)
    for t in range(T):
        kt, vt, qt = k[:, t], v[:, t], q[:, t]  # [B,H,dk], [B,H,dv], [B,H,dk]
        S = S * torch.exp(g[:, t])[..., None, None]
        u = beta[:, t][..., None] * (vt - torch.einsum("bhkv,bhk->bhv", S, kt))
        S = S + torch.einsum("bhk,bhv->bhkv", kt, u)
        o[:, t] = torch.einsum("bhkv,bhk->bhv", S, qt)
    return o


def jet_block(x, W, pre, jcfg):
    """JetBlock, spec section 2. x = normalized block input [B,T,hidden]."""
    B, T, _ = x.shape
    H = int(jcfg["num_heads"])
    dk = int(jcfg["head_dim"])
    Wc = int(jcfg["conv_size"])
    norm_eps = float(jcfg["norm_eps"])
    Dv = W(pre + "v_proj.weight").shape[0]
    dv = Dv // H
    assert dv * H == Dv, f"v_proj rows {Dv} not a multiple of {H} heads"
    assert abs(dv - jcfg["expand_v"] * dk) < 1e-3 * dk, f"expand_v {jcfg['expand_v']} x head_dim {dk} != d_v {dv}"
    red = int(jcfg["dconv_generator_reduction"])
    assert W(pre + "dynamic_conv1d.kernel_generator.w1.weight").shape[0] == Dv // red

    q = silu(linear(x, W(pre + "q_proj.weight")))  # [B,T,Dk]
    k = silu(linear(x, W(pre + "k_proj.weight")))
    u = linear(x, W(pre + "v_proj.weight"))  # [B,T,Dv] raw values

    # Per-token depthwise kernels from the block input x.
    hg = silu(linear(x, W(pre + "dynamic_conv1d.kernel_generator.w1.weight")))
    ker = linear(hg, W(pre + "dynamic_conv1d.kernel_generator.w2.weight"), W(pre + "dynamic_conv1d.kernel_generator.w2.bias"))
    ker = ker.view(B, T, Dv, Wc)  # flat index d*W + w
    # v[t,d] = silu(sum_w ker[t,d,w] * u[t-W+1+w, d]), zero before the sequence start.
    u_pad = torch.cat([torch.zeros(B, Wc - 1, Dv, dtype=DT), u], dim=1)  # u_pad[s + W-1] = u[s]
    conv = torch.zeros(B, T, Dv, dtype=DT)
    for t in range(T):
        for w in range(Wc):
            # u[t - W + 1 + w] lives at u_pad[t + w]
            conv[:, t] += ker[:, t, :, w] * u_pad[:, t + w]
    v = silu(conv)

    beta = torch.sigmoid(linear(x, W(pre + "b_proj.weight")))  # [B,T,H]
    g = -torch.exp(W(pre + "A_log")) * F.softplus(linear(x, W(pre + "a_proj.weight")) + W(pre + "dt_bias"))

    q = l2_norm(q.view(B, T, H, dk)) * dk**-0.5
    k = l2_norm(k.view(B, T, H, dk))
    v = v.view(B, T, H, dv)
    o = gated_delta_rule(q, k, v, g, beta)  # [B,T,H,dv]

    gate = silu(linear(x, W(pre + "g_proj.weight"))).view(B, T, H, dv)
    o = rms_norm(o, W(pre + "o_norm.weight"), norm_eps) * gate
    return linear(o.reshape(B, T, Dv), W(pre + "o_proj.weight"))


def swiglu(x, W, pre):
    return linear(silu(linear(x, W(pre + "gate_proj.weight"))) * linear(x, W(pre + "up_proj.weight")), W(pre + "down_proj.weight"))


# ----------------------------------------------------------------------------------------------
# The decoder
# ----------------------------------------------------------------------------------------------


def forward(cfg, W, input_ids):
    eps = float(cfg["rms_norm_eps"])
    eff = cfg.get("efficient_attention_config") or {}
    types = cfg["layer_types"]
    assert len(types) == cfg["num_hidden_layers"], "layer_types must name every layer"
    embed = W("model.embed_tokens.weight")
    h = embed[input_ids]  # [B,T,hidden]
    for i, kind in enumerate(types):
        pre = f"model.layers.{i}."
        x = rms_norm(h, W(pre + "input_layernorm.weight"), eps)
        if kind == "attn":
            h = h + softmax_attention(x, W, pre + "self_attn.", cfg, None)
        elif kind == "swa":
            h = h + softmax_attention(x, W, pre + "self_attn.", cfg, int(eff["swa"]["window_size"]))
        elif kind == "jet":
            h = h + jet_block(x, W, pre + "self_attn.", eff["jet"])
        else:
            raise ValueError(f"layer {i}: unknown layer type {kind!r}")
        h = h + swiglu(rms_norm(h, W(pre + "post_attention_layernorm.weight"), eps), W, pre + "mlp.")
    h = rms_norm(h, W("model.norm.weight"), eps)
    head = embed if cfg.get("tie_word_embeddings", False) else W("lm_head.weight")
    return h @ head.T


def main(argv):
    if len(argv) != 4:
        sys.exit(__doc__)
    model_dir, ids_path, out_path = argv[1:]
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    W = Weights(load_safetensors(os.path.join(model_dir, "model.safetensors")))
    ids = torch.from_numpy(np.load(ids_path)["input_ids"].astype(np.int64))
    with torch.no_grad():
        logits = forward(cfg, W, ids)
    unused = sorted(set(W.t) - W.used)
    if unused:
        sys.exit(f"parameters the reference never read (wrong names?): {unused}")
    np.savez(out_path, logits=logits.numpy().astype(np.float32))


if __name__ == "__main__":
    main(sys.argv)
