#!/usr/bin/env python3
"""Golden data for jetc's GGUF reader (crate `jetc-gguf`, gguf/).

Reference: the `gguf` package (gguf-py from llama.cpp), version pinned in
scripts/requirements-fixtures.txt. Writes, into tests/golden/gguf/:

  all_types.gguf      a small GGUF v3 file written with `gguf.GGUFWriter`: metadata of every
                      value type (scalars, arrays of every element type, an array of arrays),
                      alignment 64, and tensors of every type jetc-gguf de-quantizes
                      (F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K) plus
                      one IQ4_NL tensor (a known type jetc-gguf does not de-quantize).
  all_types_ref.npz   for each de-quantizable tensor, `gguf.quants.dequantize` of its bytes as
                      read back by `gguf.GGUFReader` (f32, row-major, the GGUF dims reversed).

Tensors per type: `<type>.quant` (random normal data quantized by `gguf.quants.quantize`,
for the types gguf-py can quantize) and `<type>.random` (random valid blocks built by hand:
random bytes with the f16 scale fields replaced by random finite f16 bit patterns; for the
float types random bit patterns; these cover every bit of every field).

The Rust tests (gguf/tests/golden.rs) compare bit for bit and check every metadata value
against the constants written below; keep the two in step.

Second use, a check on a real model (nothing is written into the repo):
  make_gguf_goldens.py --ref-from MODEL.gguf OUT.npz
writes gguf-py's de-quantization of the first tensor of each type in MODEL.gguf to OUT.npz;
then `cargo run -p jetc-gguf --example gguf_inspect -- MODEL.gguf --check OUT.npz` compares.

Usage: /root/.cache/jetc/venv-export/bin/python scripts/make_gguf_goldens.py
"""
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T, GGUFValueType as V
from gguf.quants import dequantize, quantize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "golden", "gguf")

# (type, numpy shape of the tensor (row-major; GGUF dims are these reversed), can gguf-py quantize it)
TYPES = [
    (T.F32, (3, 64), True),
    (T.F16, (3, 64), True),
    (T.BF16, (3, 64), True),
    (T.Q4_0, (2, 3, 64), True),
    (T.Q4_1, (3, 128), True),
    (T.Q5_0, (3, 128), True),
    (T.Q5_1, (3, 128), True),
    (T.Q8_0, (256,), True),
    (T.Q2_K, (2, 512), False),
    (T.Q3_K, (2, 512), False),
    (T.Q4_K, (2, 512), False),
    (T.Q5_K, (2, 512), False),
    (T.Q6_K, (2, 512), False),
]

# Byte offsets of the f16 fields (scales d, dmin, m) inside one block.
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
    T.IQ4_NL: [0],
}


def random_finite_f16_bits(rng, n):
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    # exponent 31 is inf/NaN: move those into the finite range
    exp_all_ones = (bits & 0x7C00) == 0x7C00
    bits[exp_all_ones] &= np.uint16(0xBFFF)
    return bits


def random_blocks(rng, qtype, shape):
    block, tsize = gguf.GGML_QUANT_SIZES[qtype]
    n_elem = int(np.prod(shape))
    assert shape[-1] % block == 0
    n_blocks = n_elem // block
    b = rng.integers(0, 256, size=(n_blocks, tsize), dtype=np.uint16).astype(np.uint8)
    for off in F16_FIELDS[qtype]:
        b[:, off:off + 2] = random_finite_f16_bits(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    return b.reshape(*shape[:-1], shape[-1] // block * tsize)


def random_float_bits(rng, qtype, shape):
    n = int(np.prod(shape))
    if qtype == T.F32:
        bits = rng.integers(0, 1 << 32, size=n, dtype=np.uint64).astype(np.uint32)
        bits[:8] = [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x00000001, 0x807FFFFF, 0x7F7FFFFF, 0x7FC00000]
        return bits.view(np.float32).reshape(shape)
    if qtype == T.F16:
        bits = random_finite_f16_bits(rng, n)
        # zeros, infinities, subnormals, the largest finite values (no NaN: payload rules differ)
        bits[:8] = [0x0000, 0x8000, 0x7C00, 0xFC00, 0x0001, 0x83FF, 0x7BFF, 0xFBFF]
        return bits.view(np.float16).reshape(shape)
    if qtype == T.BF16:
        bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
        bits[:6] = [0x0000, 0x8000, 0x7F80, 0xFF80, 0x0001, 0x7FC0]
        return bits.view(np.uint8).reshape(*shape[:-1], shape[-1] * 2)
    raise ValueError(qtype)


def quantized(rng, qtype, shape):
    x = rng.standard_normal(size=shape).astype(np.float32)
    x.reshape(-1)[:3] = [0.0, 0.0, 0.0]
    if qtype == T.F32:
        return x
    if qtype == T.F16:
        return x.astype(np.float16)
    return quantize(x, qtype)  # uint8 bytes, row-major, last dim in bytes


# ---------------------------------------------------------------- metadata (mirror in golden.rs)
def add_metadata(w):
    w.add_custom_alignment(64)
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", float(np.float32(np.pi)))
    w.add_bool("test.bool_true", True)
    w.add_bool("test.bool_false", False)
    w.add_string("test.string", "héllo wörld ✓")
    w.add_key_value("test.empty_string", "", V.STRING)
    w.add_uint64("test.u64", 2**63 + 5)
    w.add_int64("test.i64", -(2**62) - 3)
    w.add_float64("test.f64", 2.718281828459045)
    w.add_key_value("test.arr_u8", [0, 1, 255], V.ARRAY, sub_type=V.UINT8)
    w.add_key_value("test.arr_i8", [-128, 0, 127], V.ARRAY, sub_type=V.INT8)
    w.add_key_value("test.arr_u16", [0, 65535], V.ARRAY, sub_type=V.UINT16)
    w.add_key_value("test.arr_i16", [-32768, 32767], V.ARRAY, sub_type=V.INT16)
    w.add_key_value("test.arr_u32", [0, 4294967295], V.ARRAY, sub_type=V.UINT32)
    w.add_key_value("test.arr_i32", [-2147483648, 2147483647, 7], V.ARRAY, sub_type=V.INT32)
    w.add_key_value("test.arr_f32", [0.5, -2.25, 1e30], V.ARRAY, sub_type=V.FLOAT32)
    w.add_key_value("test.arr_bool", [True, False, True], V.ARRAY, sub_type=V.BOOL)
    w.add_key_value("test.arr_str", ["a", "", "ünï", "<|im_end|>"], V.ARRAY, sub_type=V.STRING)
    w.add_key_value("test.arr_u64", [0, 2**64 - 1], V.ARRAY, sub_type=V.UINT64)
    w.add_key_value("test.arr_i64", [-(2**63), 2**63 - 1], V.ARRAY, sub_type=V.INT64)
    w.add_key_value("test.arr_f64", [0.1, -1e300], V.ARRAY, sub_type=V.FLOAT64)
    w.add_key_value("test.arr_nested", [[1, 2], [3], [4, 5, 6]], V.ARRAY)  # arrays of INT32 arrays
    w.add_block_count(2)
    w.add_context_length(128)
    w.add_embedding_length(64)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)


def write_goldens():
    rng = np.random.default_rng(20240617)
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "all_types.gguf")
    w = gguf.GGUFWriter(path, "llama")
    add_metadata(w)
    for qtype, shape, can_quantize in TYPES:
        tname = qtype.name.lower()
        if can_quantize:
            data = quantized(rng, qtype, shape)
            w.add_tensor(f"{tname}.quant", data, raw_dtype=None if qtype in (T.F32, T.F16) else qtype)
        if qtype in (T.F32, T.F16, T.BF16):
            data = random_float_bits(rng, qtype, shape)
            w.add_tensor(f"{tname}.random", data, raw_dtype=T.BF16 if qtype == T.BF16 else None)
        else:
            w.add_tensor(f"{tname}.random", random_blocks(rng, qtype, shape), raw_dtype=qtype)
    w.add_tensor("iq4_nl.unsupported", random_blocks(rng, T.IQ4_NL, (2, 32)), raw_dtype=T.IQ4_NL)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    ref = reference_dequant(path, first_of_each_type=False)
    np.savez_compressed(os.path.join(OUT, "all_types_ref.npz"), **ref)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {path} and all_types_ref.npz ({len(ref)} arrays), {total} bytes in {OUT}")


def reference_dequant(path, first_of_each_type):
    r = gguf.GGUFReader(path)
    out = {}
    seen = set()
    for t in r.tensors:
        if t.tensor_type == T.IQ4_NL and not first_of_each_type:
            continue
        if first_of_each_type and t.tensor_type in seen:
            continue
        seen.add(t.tensor_type)
        # The reader's `data` is typed for F32/F16 (and bytes otherwise); dequantize from raw bytes.
        raw = np.asarray(r.data[t.data_offset:t.data_offset + t.n_bytes])
        shape = [int(d) for d in reversed(t.shape)]  # row-major
        block, tsize = gguf.GGML_QUANT_SIZES[t.tensor_type]
        rows = raw.reshape(*shape[:-1], shape[-1] // block * tsize)
        if t.tensor_type in (T.F32, T.F16):
            rows = rows.view(np.float32 if t.tensor_type == T.F32 else np.float16)
        deq = np.asarray(dequantize(rows, t.tensor_type), dtype=np.float32)
        assert list(deq.shape) == shape, (t.name, deq.shape, shape)
        out[t.name] = deq
        if first_of_each_type:
            print(f"{t.name}: {t.tensor_type.name} shape {shape}")
    return out


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--ref-from":
        ref = reference_dequant(sys.argv[2], first_of_each_type=True)
        np.savez(sys.argv[3], **ref)
        return
    if len(sys.argv) != 1:
        sys.exit(__doc__)
    write_goldens()


if __name__ == "__main__":
    main()
