#!/usr/bin/env python3
"""Golden data for jetc's CPU linear-attention mixers (runtime/src/linear/).

References: the pure-torch `naive.py` files of flash-linear-attention (fla) 0.6.0, loaded by
file path (importing `fla.ops` pulls Triton), run in float64 (the files' explicit float32
casts are rewritten to float64 when loading; the untouched float32 versions are run as a
cross-check). Mamba2 (not in fla) and JetBlock's dynamic convolution are written here from
their definitions (mamba_ssm's selective_state_update recurrence in mamba's own layout;
`jet-nemotron.md` §2 with an unfold, like the released `_forward_naive`), independently of
the Rust code.

Inputs are drawn in float64, cast to float32 (what is stored); the references are computed
in float64 from those float32 values and stored as float32. One `.npz` per case in
tests/golden/linear/; layouts are the Rust API's (fla's `[B, T, H, D]`, state `[B, H, K, V]`).

Usage: <venv with torch, numpy, einops>/bin/python scripts/make_linear_goldens.py
(the project uses /root/.cache/jetc/venv-export). fla wheels are taken from
~/.cache/jetc/wheels, downloaded there with `pip download --no-deps` when missing.
"""
import glob
import hashlib
import importlib.machinery
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True  # the float64 loader must never pick up a cached float32 .pyc

FLA_VERSION = "0.6.0"
WHEELS = os.path.expanduser("~/.cache/jetc/wheels")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "golden", "linear")

NAIVE_FILES = {
    "gdn": "fla/ops/gated_delta_rule/naive.py",
    "delta": "fla/ops/delta_rule/naive.py",
    "gla": "fla/ops/gla/naive.py",
    "sgla": "fla/ops/simple_gla/naive.py",
    "retention": "fla/ops/retention/naive.py",
    "dplr": "fla/ops/generalized_delta_rule/dplr/naive.py",
}


# ---------------------------------------------------------------------------------------
# fla loading


def fla_root():
    """Unzips fla-core 0.6.0 (downloaded into the wheel cache if needed) to a temp dir."""
    pattern = os.path.join(WHEELS, f"fla_core-{FLA_VERSION}-*.whl")
    if not glob.glob(pattern):
        subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps", "-d", WHEELS,
                               f"fla-core=={FLA_VERSION}", f"flash-linear-attention=={FLA_VERSION}"])
    wheel = sorted(glob.glob(pattern))[0]
    root = tempfile.mkdtemp(prefix="fla-")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(root)
    return root, os.path.basename(wheel)


def to_f64(src):
    out = (src.replace("torch.float32", "torch.float64")
              .replace(".float()", ".double()")
              .replace("dtype=torch.float)", "dtype=torch.float64)")
              .replace("dtype=torch.float,", "dtype=torch.float64,"))
    assert "float32" not in out and ".float()" not in out and "torch.float)" not in out
    return out


class F64Loader(importlib.machinery.SourceFileLoader):
    def source_to_code(self, data, path, *, _optimize=-1):
        return compile(to_f64(data.decode()), path, "exec", dont_inherit=True)


def load_naive(root, rel, f64):
    path = os.path.join(root, rel)
    name = "naive_" + rel.replace("/", "_").replace(".py", "") + ("_f64" if f64 else "_f32")
    loader = F64Loader(name, path) if f64 else importlib.machinery.SourceFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert "triton" not in sys.modules, f"{rel} pulled in triton"
    return mod


# ---------------------------------------------------------------------------------------
# helpers

rng = np.random.default_rng(20250806)


def randn(*shape):
    return rng.standard_normal(shape)


def f32(x):
    """float64 -> float32 (stored) -> float64 torch tensor (the reference's input)."""
    return torch.from_numpy(np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float64))


def l2norm(x):
    return x / np.sqrt((x * x).sum(-1, keepdims=True) + 1e-6)


def logsigmoid(x):
    return -np.logaddexp(0.0, -x)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np32(t):
    return t.detach().cpu().numpy().astype(np.float32) if torch.is_tensor(t) else np.asarray(t, np.float32)


def head_maps(hq, hk, hv):
    """(Ho, Hs, q head of out o, state head of out o, k head of state s, v head of state s)."""
    hs = max(hk, hv)
    ho = max(hq, hs)
    if hq > hs:
        q_of, st_of = (lambda o: o), (lambda o: o * hs // hq)
    else:
        q_of, st_of = (lambda o: o * hq // hs), (lambda o: o)
    return ho, hs, q_of, st_of, (lambda s: s * hk // hs), (lambda s: s * hv // hs)


def expand(hq, hk, hv, q, k, v, per_state, h0):
    """Explicit head repetition: every tensor with Ho heads (fla kernels have one H).
    per_state: dict of [B,T,Hs,...] tensors. Returns expanded (q, k, v, per_state, h0) and a
    function taking the expanded final state [B,Ho,K,V] back to [B,Hs,K,V]."""
    ho, hs, q_of, st_of, k_of, v_of = head_maps(hq, hk, hv)
    idx = lambda f: torch.tensor([f(o) for o in range(ho)])
    qe = q[:, :, idx(q_of)]
    ke = k[:, :, idx(lambda o: k_of(st_of(o)))]
    ve = v[:, :, idx(lambda o: v_of(st_of(o)))]
    pe = {n: x[:, :, idx(st_of)] for n, x in per_state.items()}
    he = None if h0 is None else h0[:, idx(st_of)]
    first = torch.tensor([min(o for o in range(ho) if st_of(o) == s) for s in range(hs)])
    return qe, ke, ve, pe, he, (lambda st: st[:, first])


def save(name, **arrays):
    path = os.path.join(OUT, name + ".npz")
    np.savez_compressed(path, **{k: np32(v) for k, v in arrays.items() if v is not None})
    return path


def close(a, b, what, tol=1e-9):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    err = ((a - b).norm() / b.norm().clamp_min(1e-300)).item()
    assert err < tol, f"{what}: relative error {err:e}"
    return err


def largest_divisor(t, cap):
    return max(d for d in range(1, min(t, cap) + 1) if t % d == 0)


# ---------------------------------------------------------------------------------------
# cases


def gdn_cases(m64, m32):
    cases = [
        # name, B, T, (Hq, Hk, Hv), dk, dv, h0, gate kind, scale
        ("gdn_t1_h0", 2, 1, (2, 2, 2), 16, 24, True, "normal", None),
        ("gdn_t7_scale", 2, 7, (2, 2, 2), 16, 24, False, "normal", 0.3),
        ("gdn_t65_h0", 2, 65, (2, 2, 2), 16, 24, True, "normal", None),
        ("gdn_t130_h0", 2, 130, (2, 2, 2), 16, 24, True, "normal", None),
        ("gdn_t65_g0", 2, 65, (2, 2, 2), 16, 24, True, "zero", None),
        ("gdn_t65_strong", 2, 65, (2, 2, 2), 16, 24, True, "strong", None),
        ("gdn_t65_gva", 1, 65, (2, 2, 4), 16, 24, True, "normal", None),
        ("gdn_t65_gqa", 1, 65, (4, 2, 2), 16, 24, True, "normal", None),
        ("gdn_t33_hk4_hv2", 1, 33, (2, 4, 2), 16, 24, True, "normal", None),
    ]
    for name, B, T, (hq, hk, hv), dk, dv, with_h0, kind, scale in cases:
        hs = max(hk, hv)
        q = f32(randn(B, T, hq, dk))
        k = f32(l2norm(randn(B, T, hk, dk)))
        v = f32(randn(B, T, hv, dv))
        beta = f32(sigmoid(randn(B, T, hs)))
        if kind == "zero":
            g = f32(np.zeros((B, T, hs)))
        elif kind == "strong":
            gg = rng.uniform(-20.0, -15.0, (B, T, hs))
            gg[rng.random((B, T, hs)) < 0.2] = -88.0  # the gate helpers' floor
            gg[:, ::5] = rng.uniform(-0.5, 0.0, (B, (T + 4) // 5, hs))  # some memory survives
            g = f32(gg)
        else:
            g = f32(-0.5 * np.logaddexp(0.0, randn(B, T, hs)))
        h0 = f32(0.5 * randn(B, hs, dk, dv)) if with_h0 else None
        sc = dk ** -0.5 if scale is None else scale
        qe, ke, ve, pe, he, back = expand(hq, hk, hv, q, k, v, {"g": g, "beta": beta}, h0)
        o, ht = m64.naive_recurrent_gated_delta_rule(qe, ke, ve, pe["beta"], pe["g"], scale=sc,
                                                     initial_state=he, output_final_state=True)
        o2, ht2 = m64.naive_chunk_gated_delta_rule(qe, ke, ve, pe["g"], pe["beta"], chunk_size=64, scale=sc,
                                                   initial_state=he, output_final_state=True)
        close(o2, o, f"{name}: fla chunk vs recurrent (f64)")
        close(ht2, ht, f"{name}: fla chunk vs recurrent state (f64)")
        o3, _ = m32.naive_recurrent_gated_delta_rule(qe.float(), ke.float(), ve.float(), pe["beta"].float(),
                                                     pe["g"].float(), scale=sc,
                                                     initial_state=None if he is None else he.float(),
                                                     output_final_state=True)
        close(o3, o, f"{name}: fla float32 vs float64", tol=1e-4)
        save(name, q=q, k=k, v=v, g=g, beta=beta, h0=h0, scale=[sc], o=o, ht=back(ht))


def delta_cases(m64):
    cases = [
        ("delta_t7", 2, 7, (2, 2, 2), False),
        ("delta_t65_h0", 2, 65, (2, 2, 2), True),
        ("delta_t130_h0", 1, 130, (2, 2, 2), True),
        ("delta_t32", 2, 32, (2, 2, 2), False),
        ("delta_t65_gva", 1, 65, (2, 2, 4), True),
    ]
    dk, dv = 16, 24
    for name, B, T, (hq, hk, hv), with_h0 in cases:
        hs = max(hk, hv)
        q = f32(randn(B, T, hq, dk))
        k = f32(l2norm(randn(B, T, hk, dk)))
        v = f32(randn(B, T, hv, dv))
        beta = f32(sigmoid(randn(B, T, hs)))
        h0 = f32(0.5 * randn(B, hs, dk, dv)) if with_h0 else None
        qe, ke, ve, pe, he, back = expand(hq, hk, hv, q, k, v, {"beta": beta}, h0)
        hf = lambda x: x.transpose(1, 2).contiguous()  # fla's delta_rule naive is head-first
        o, ht = m64.delta_rule_recurrence(hf(qe), hf(ke), hf(ve), hf(pe["beta"]), initial_state=he,
                                          output_final_state=True)
        o = hf(o)
        if he is None:
            c = largest_divisor(T, 32)
            oc, htc = m64.delta_rule_chunkwise(hf(qe), hf(ke), hf(ve), hf(pe["beta"]), chunk_size=c)
            close(hf(oc), o, f"{name}: fla chunkwise({c}) vs recurrence (f64)")
            close(htc, ht, f"{name}: fla chunkwise state (f64)")
        save(name, q=q, k=k, v=v, beta=beta, h0=h0, scale=[dk ** -0.5], o=o, ht=back(ht))


def gla_cases(m64):
    cases = [
        ("gla_t1_h0", 2, 1, (2, 2, 2), True, "layer"),
        ("gla_t7", 2, 7, (2, 2, 2), False, "layer"),
        ("gla_t65_h0", 2, 65, (2, 2, 2), True, "layer"),
        ("gla_t130_h0", 1, 130, (2, 2, 2), True, "strong"),
        ("gla_t65_gqa", 1, 65, (4, 2, 2), True, "strong"),
        ("gla_t65_gva", 1, 65, (2, 2, 4), True, "layer"),
    ]
    dk, dv = 16, 24
    for name, B, T, (hq, hk, hv), with_h0, kind in cases:
        hs = max(hk, hv)
        q = f32(randn(B, T, hq, dk))
        k = f32(randn(B, T, hk, dk))
        v = f32(randn(B, T, hv, dv))
        if kind == "layer":  # the fla GLA layer's gk = logsigmoid(x) / 16
            gk = logsigmoid(randn(B, T, hs, dk)) / 16
        else:
            gk = 4 * logsigmoid(randn(B, T, hs, dk))
            gk[rng.random(gk.shape) < 0.1] = -20.0
        gk = f32(gk)
        h0 = f32(0.5 * randn(B, hs, dk, dv)) if with_h0 else None
        qe, ke, ve, pe, he, back = expand(hq, hk, hv, q, k, v, {"gk": gk}, h0)
        o, ht = m64.naive_recurrent_gla(qe, ke, ve, pe["gk"], initial_state=he, output_final_state=True)
        save(name, q=q, k=k, v=v, gk=gk, h0=h0, scale=[dk ** -0.5], o=o, ht=back(ht))


def sgla_cases(m64):
    cases = [
        ("sgla_t1", 2, 1, (2, 2, 2), False, "normal"),
        ("sgla_t7_h0", 2, 7, (2, 2, 2), True, "normal"),
        ("sgla_t65_h0", 2, 65, (2, 2, 2), True, "normal"),
        ("sgla_t130_h0", 1, 130, (2, 2, 2), True, "normal"),
        ("sgla_t65_strong", 2, 65, (2, 2, 2), True, "strong"),
        ("sgla_t65_gqa", 1, 65, (4, 2, 2), True, "normal"),
    ]
    dk, dv = 16, 24
    for name, B, T, (hq, hk, hv), with_h0, kind in cases:
        hs = max(hk, hv)
        q = f32(randn(B, T, hq, dk))
        k = f32(randn(B, T, hk, dk) * 0.5)
        v = f32(randn(B, T, hv, dv))
        if kind == "strong":
            gg = rng.uniform(-20.0, -10.0, (B, T, hs))
            gg[:, ::4] = -0.05
            g = f32(gg)
        else:
            g = f32(logsigmoid(randn(B, T, hs)))
        h0 = f32(0.5 * randn(B, hs, dk, dv)) if with_h0 else None
        sc = dk ** -0.5
        qe, ke, ve, pe, he, back = expand(hq, hk, hv, q, k, v, {"g": g}, h0)
        o, ht = m64.naive_recurrent_simple_gla(qe, ke, ve, pe["g"], scale=sc, initial_state=he,
                                               output_final_state=True)
        o2, ht2 = m64.naive_chunk_simple_gla(qe, ke, ve, pe["g"], initial_state=he, output_final_state=True,
                                             chunk_size=64, scale=sc)
        close(o2, o, f"{name}: fla chunk vs recurrent (f64)")
        close(ht2, ht, f"{name}: fla chunk vs recurrent state (f64)")
        save(name, q=q, k=k, v=v, g=g, h0=h0, scale=[sc], o=o, ht=back(ht))


def retnet_cases(m_ret, m_sgla):
    dk, dv = 16, 24
    for name, B, T, H in [("retnet_t65", 1, 65, 4), ("retnet_t130", 1, 130, 2), ("retnet_t7", 1, 7, 3)]:
        q = f32(randn(B, T, H, dk))
        k = f32(randn(B, T, H, dk) * 0.5)
        v = f32(randn(B, T, H, dv))
        hf = lambda x: x.transpose(1, 2).contiguous()
        o = hf(m_ret.naive_retention(hf(q), hf(k), hf(v)))
        # naive_retention returns no state: the state is simple GLA's with g = log(gamma_h),
        # how fla's chunk/fused_recurrent retention define it (g_gamma); outputs must agree.
        lg = torch.log1p(-(2.0 ** (-5.0 - torch.arange(H, dtype=torch.float64))))
        g = lg.view(1, 1, H).expand(B, T, H).contiguous()
        o2, ht = m_sgla.naive_recurrent_simple_gla(q, k, v, g, scale=dk ** -0.5, output_final_state=True)
        close(o2, o, f"{name}: retention vs simple GLA with log gamma (f64)")
        save(name, q=q, k=k, v=v, scale=[dk ** -0.5], o=o, ht=ht)


def rwkv7_cases(m64):
    dk, dv = 16, 24
    cases = [
        ("rwkv7_t1_h0", 2, 1, (2, 2, 2), True, None),
        ("rwkv7_t7", 2, 7, (2, 2, 2), False, None),
        ("rwkv7_t65_h0", 2, 65, (2, 2, 2), True, None),
        ("rwkv7_t130_h0", 1, 130, (2, 2, 2), True, "strong"),
        ("rwkv7_t65_scale1_gva", 1, 65, (2, 2, 4), True, 1.0),
    ]
    for name, B, T, (hq, hk, hv), with_h0, opt in cases:
        hs = max(hk, hv)
        r = f32(randn(B, T, hq, dk))
        k = f32(randn(B, T, hk, dk) * 0.5)
        v = f32(randn(B, T, hv, dv))
        w = -0.6065306597126334 * sigmoid(randn(B, T, hs, dk))  # the fla RWKV7 layer's decay
        if opt == "strong":
            w[rng.random(w.shape) < 0.2] = -20.0
        w = f32(w)
        kk = l2norm(randn(B, T, hs, dk))
        iclr = sigmoid(randn(B, T, hs, dk))
        a, b = f32(-kk), f32(kk * iclr)
        h0 = f32(0.5 * randn(B, hs, dk, dv)) if with_h0 else None
        qe, ke, ve, pe, he, back = expand(hq, hk, hv, r, k, v, {"w": w, "a": a, "b": b}, h0)
        # dplr_recurrence scales q by dk^-0.5; another scale is folded into r beforehand.
        sc = dk ** -0.5 if opt != 1.0 else 1.0
        qin = qe * (sc / dk ** -0.5)
        hf = lambda x: x.transpose(1, 2).contiguous()
        o, ht = m64.dplr_recurrence(hf(qin), hf(ke), hf(ve), hf(pe["a"]), hf(pe["b"]), hf(pe["w"]),
                                    initial_state=he, output_final_state=True)
        o = hf(o)
        c = largest_divisor(T, 32)
        oc, htc = m64.dplr_chunkwise(hf(qin), hf(ke), hf(ve), hf(pe["a"]), hf(pe["b"]), hf(pe["w"]),
                                     initial_state=he, output_final_state=True, chunk_size=c)
        close(hf(oc), o, f"{name}: fla dplr_chunkwise({c}) vs recurrence (f64)", tol=1e-7)
        close(htc, ht, f"{name}: fla dplr_chunkwise state (f64)", tol=1e-7)
        save(name, r=r, k=k, v=v, w=w, a=a, b=b, h0=h0, scale=[sc], o=o, ht=back(ht))


def mamba2_ref(x, dt_raw, dt_bias, A_log, Bm, Cm, D, h0):
    """mamba_ssm's selective_state_update recurrence, mamba layout (state [B, H, P, N])."""
    Bsz, T, H, P = x.shape
    G, N = Bm.shape[2], Bm.shape[3]
    dt = F.softplus(dt_raw + dt_bias)
    A = -torch.exp(A_log)
    Bh = Bm.repeat_interleave(H // G, dim=2)
    Ch = Cm.repeat_interleave(H // G, dim=2)
    h = torch.zeros(Bsz, H, P, N, dtype=torch.float64) if h0 is None else h0.clone()
    y = torch.zeros_like(x)
    for t in range(T):
        dA = torch.exp(dt[:, t] * A)  # [B, H]
        dBx = dt[:, t, :, None, None] * x[:, t, :, :, None] * Bh[:, t, :, None, :]
        h = h * dA[:, :, None, None] + dBx
        y[:, t] = (h * Ch[:, t, :, None, :]).sum(-1) + D[None, :, None] * x[:, t]
    return y, h


def mamba2_cases():
    for name, B, T, G, H, N, P, with_h0 in [
        ("mamba2_t7", 2, 7, 1, 2, 16, 24, False),
        ("mamba2_t65_h0", 2, 65, 1, 4, 16, 24, True),
        ("mamba2_t130_h0_g2", 1, 130, 2, 4, 16, 12, True),
    ]:
        x = f32(randn(B, T, H, P))
        dt_raw = f32(randn(B, T, H))
        dt_bias = f32(np.log(np.expm1(np.exp(rng.uniform(np.log(1e-3), np.log(0.1), H)))))
        A_log = f32(np.log(rng.uniform(1, 16, H)))
        Bm = f32(randn(B, T, G, N) * 0.5)
        Cm = f32(randn(B, T, G, N) * 0.5)
        D = f32(rng.uniform(0.5, 1.5, H))
        h0 = f32(0.5 * randn(B, H, P, N)) if with_h0 else None
        # Larger steps for one case so the decay matters over the sequence.
        if T == 65:
            dt_raw = f32(np.asarray(dt_raw) + 1.0)
        y, h = mamba2_ref(x, dt_raw, dt_bias, A_log, Bm, Cm, D, h0)
        tr = lambda s: None if s is None else s.transpose(-1, -2).contiguous()  # -> [B, H, N, P]
        save(name, x=x, dt_raw=dt_raw, dt_bias=dt_bias, A_log=A_log, B=Bm, C=Cm, D=D, h0=tr(h0), o=y, ht=tr(h))


def dconv_ref(u, ker, cache):
    """JetBlock's dynamic conv (jet-nemotron.md §2): unfold over [cache[..., 1:], u]."""
    Bsz, T, C = u.shape
    W = ker.shape[-1]
    prev = torch.zeros(Bsz, C, W, dtype=torch.float64) if cache is None else cache
    full = torch.cat([prev[:, :, 1:].transpose(1, 2), u], dim=1)  # [B, W-1+T, C]
    win = full.unfold(1, W, 1)  # [B, T, C, W]
    v = F.silu((win * ker).sum(-1))
    new_cache = torch.cat([prev.transpose(1, 2), u], dim=1)[:, -W:].transpose(1, 2)
    return v, new_cache


def dconv_cases():
    for name, B, T, C, W, with_cache in [
        ("dconv_t1_cache", 2, 1, 24, 4, True),
        ("dconv_t2_cache", 2, 2, 24, 4, True),
        ("dconv_t7", 2, 7, 24, 4, False),
        ("dconv_t65_cache", 2, 65, 24, 4, True),
        ("dconv_t9_w3_cache", 1, 9, 10, 3, True),
    ]:
        u = f32(randn(B, T, C))
        ker = f32(randn(B, T, C, W) * 0.5)
        cache = f32(randn(B, C, W)) if with_cache else None
        v, nc = dconv_ref(u, ker, cache)
        save(name, u=u, ker=ker, cache=cache, v=v, new_cache=nc)


def main():
    torch.set_default_dtype(torch.float64)
    os.makedirs(OUT, exist_ok=True)
    for old in glob.glob(os.path.join(OUT, "*.npz")):
        os.remove(old)
    root, wheel = fla_root()
    m64 = {k: load_naive(root, p, f64=True) for k, p in NAIVE_FILES.items()}
    m32 = {k: load_naive(root, p, f64=False) for k, p in NAIVE_FILES.items()}
    gdn_cases(m64["gdn"], m32["gdn"])
    delta_cases(m64["delta"])
    gla_cases(m64["gla"])
    sgla_cases(m64["sgla"])
    retnet_cases(m64["retention"], m64["sgla"])
    rwkv7_cases(m64["dplr"])
    mamba2_cases()
    dconv_cases()
    files = sorted(glob.glob(os.path.join(OUT, "*.npz")))
    total = sum(os.path.getsize(f) for f in files)
    assert total < 3 << 20, f"goldens are {total} bytes"
    script = os.path.abspath(__file__)
    sha = hashlib.sha256(open(script, "rb").read()).hexdigest()[:16]
    try:
        head = subprocess.check_output(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], text=True).strip()
        dirty = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD", "--", script]).returncode != 0
        tracked = subprocess.run(["git", "-C", ROOT, "ls-files", "--error-unmatch", script],
                                 capture_output=True).returncode == 0
        commit = head + ("" if tracked and not dirty else " (script not yet committed there)")
    except Exception:
        commit = "unknown"
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write(
            "# Golden data of the linear-attention mixers (runtime/src/linear/)\n\n"
            f"Produced by `scripts/make_linear_goldens.py` (sha256 {sha}…, repository HEAD {commit}) "
            f"with fla {FLA_VERSION} ({wheel}), torch {torch.__version__}, numpy {np.__version__}: "
            "the `naive.py` references " + ", ".join(f"`{p}`" for p in NAIVE_FILES.values()) +
            " run in float64 on float32 inputs; Mamba2 and the dynamic conv from the script's own "
            f"references. {len(files)} files, {total} bytes. Regenerate with "
            "`/root/.cache/jetc/venv-export/bin/python scripts/make_linear_goldens.py`.\n"
        )
    print(f"wrote {len(files)} golden files, {total} bytes, to {OUT}")


if __name__ == "__main__":
    main()
