#!/usr/bin/env python3
"""Peer timings for scripts/gpu-check.sh: fla 0.6.0's Triton kernels and a PyTorch JetBlock
mixer step at Jet-Nemotron shapes, each replayed from a CUDA graph (decode) or timed with
CUDA events after warm-up with an L2 flush (prefill); median of N runs. Writes JSON.

Shapes mirror `jetc gpu-bench`: decode B in {1, 8, 64, 256} at (H, K, V) = (12, 96, 256) and
(16, 128, 256); prefill B8 T4096 and B1 T4096. fla is optional (its wheels are carried).
Careful (cuda-nvrtc.md): fused_recurrent_gated_delta_rule takes gk as 5th positional
argument, so g and beta are passed by keyword.
"""
import argparse
import json
import statistics

import torch
import torch.nn.functional as F

DEV = "cuda"
FLUSH = None


def flush_l2():
    global FLUSH
    if FLUSH is None:
        FLUSH = torch.empty(256 << 20, dtype=torch.uint8, device=DEV)
    FLUSH.zero_()


def time_events(fn, iters=20, warmup=3, flush=True):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        if flush:
            flush_l2()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)


def time_graph(fn, iters=20):
    """Captures fn in a CUDA graph and times replays (launch overhead removed)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return time_events(g.replay, iters=iters)


def mixer_inputs(b, t, h, k, v, w=4, dtype=torch.bfloat16):
    r = lambda *s, scale=1.0: (torch.rand(*s, device=DEV) * 2 - 1).mul(scale)
    return dict(
        q=r(b, t, h, k, scale=2).to(dtype), k=r(b, t, h, k, scale=2).to(dtype),
        u=r(b, t, h * v).to(dtype), ker=r(b, t, h * v, w, scale=0.5).to(dtype),
        a=r(b, t, h, scale=2).to(dtype), bb=r(b, t, h, scale=2).to(dtype), gate=r(b, t, h, v, scale=2).to(dtype),
        a_log=r(h) + 0.5, dt_bias=r(h), o_norm=r(v, scale=0.5) + 1,
        conv=r(b, h * v, w).to(dtype), state=r(b, h, k, v, scale=0.5),
    )


def torch_mixer_step(x, recurrent):
    """PyTorch JetBlock mixer decode step (what jetc's fused kernel replaces)."""
    conv = torch.cat([x["conv"][:, :, 1:], x["u"][:, 0, :, None]], dim=-1)
    x["conv"].copy_(conv)
    v = F.silu((conv.float() * x["ker"][:, 0].float()).sum(-1)).to(x["u"].dtype)
    b, h = x["a"].shape[0], x["a"].shape[2]
    v = v.view(b, 1, h, -1)
    q = F.normalize(F.silu(x["q"].float()), dim=-1, eps=1e-6)
    k = F.normalize(F.silu(x["k"].float()), dim=-1, eps=1e-6)
    g = -x["a_log"].exp() * F.softplus(x["a"].float() + x["dt_bias"])
    beta = torch.sigmoid(x["bb"].float())
    o = recurrent(q.to(v.dtype), k.to(v.dtype), v, g, beta, x["state"])
    o = o.float()
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * x["o_norm"] * F.silu(x["gate"].float())
    return o.to(v.dtype)


def torch_recurrent(q, k, v, g, beta, state):
    """Plain PyTorch gated delta rule step (fp32 state, updated in place)."""
    scale = q.shape[-1] ** -0.5
    q, k, v = q[:, 0].float() * scale, k[:, 0].float(), v[:, 0].float()
    s = state * g[:, 0, :, None, None].exp()
    u = beta[:, 0, :, None] * (v - torch.einsum("bhkv,bhk->bhv", s, k))
    s = s + k[..., None] * u[..., None, :]
    state.copy_(s)
    return torch.einsum("bhkv,bhk->bhv", s, q)[:, None]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": []}
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule
        import fla
        res["fla"] = getattr(fla, "__version__", "?")
    except Exception as e:  # fla is optional
        res["fla_error"] = repr(e)
        chunk_gated_delta_rule = fused_recurrent_gated_delta_rule = None

    def fla_recurrent(q, k, v, g, beta, state):
        o, _ = fused_recurrent_gated_delta_rule(q, k, v, g=g, beta=beta.to(v.dtype), initial_state=state,
                                                output_final_state=False, use_qk_l2norm_in_kernel=False)
        return o

    for name, (h, kd, vd) in {"2b": (12, 96, 256), "4b": (16, 128, 256)}.items():
        for b in (1, 8, 64, 256):
            x = mixer_inputs(b, 1, h, kd, vd)
            row = {"model": name, "op": "decode", "batch": b}
            row["torch_mixer_graph_ms"] = time_graph(lambda: torch_mixer_step(x, torch_recurrent))
            if fused_recurrent_gated_delta_rule is not None:
                qn = F.normalize(F.silu(x["q"].float()), dim=-1).to(torch.bfloat16)
                kn = F.normalize(F.silu(x["k"].float()), dim=-1).to(torch.bfloat16)
                vv = x["u"].view(b, 1, h, vd)
                g = -x["a_log"].exp() * F.softplus(x["a"].float() + x["dt_bias"])
                beta = torch.sigmoid(x["bb"].float()).to(torch.bfloat16)
                row["fla_fused_recurrent_graph_ms"] = time_graph(lambda: fused_recurrent_gated_delta_rule(
                    qn, kn, vv, g=g, beta=beta, initial_state=x["state"], output_final_state=True))
                row["torch_mixer_fla_graph_ms"] = time_graph(lambda: torch_mixer_step(x, fla_recurrent))
            row["state_floor_ms"] = 2 * b * h * kd * vd * 4 / 3.9e12 * 1e3
            res["rows"].append(row)
            print(row, flush=True)
        if chunk_gated_delta_rule is not None:
            for b, t in ((8, 4096), (1, 4096)):
                q = F.normalize(torch.randn(b, t, h, kd, device=DEV), dim=-1).to(torch.bfloat16)
                k = F.normalize(torch.randn(b, t, h, kd, device=DEV), dim=-1).to(torch.bfloat16)
                v = torch.randn(b, t, h, vd, device=DEV, dtype=torch.bfloat16)
                g = F.logsigmoid(torch.randn(b, t, h, device=DEV))
                beta = torch.rand(b, t, h, device=DEV, dtype=torch.bfloat16)
                s0 = torch.randn(b, h, kd, vd, device=DEV)
                ms = time_events(lambda: chunk_gated_delta_rule(q, k, v, g=g, beta=beta, initial_state=s0, output_final_state=True))
                row = {"model": name, "op": "prefill", "batch": b, "seq": t, "fla_chunk_ms": ms}
                res["rows"].append(row)
                print(row, flush=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
