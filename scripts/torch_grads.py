#!/usr/bin/env python3
"""PyTorch autograd reference for the gradients of jetc's local distillation of one linear
mixer (train/tests/torch_grads.rs).

    python scripts/torch_grads.py IN.npz OUT.npz --block jetblock|gated-deltanet

IN.npz (written by the test):
    x          [B, T, hidden]  the block input (the teacher attention's normalized input)
    y_t        [B, T, hidden]  the target (the teacher attention's output)
    layers.{l}.{jet|gated_deltanet}.<name>   every trainable weight of the block, in jetc's
               layout (MatMul weights [in, out]; conv kernels flat [C*W], index c*W + w)
    jetc_grad.<weight name>  jetc's gradients (ignored here; kept for inspection)
OUT.npz:
    loss                    the normalized MSE sum((y_s - y_t)^2) / (sum(y_t^2) + 1e-12)
    y_s                     the block output [B, T, hidden]
    grad.<weight name>      d loss / d weight, in the weight's layout (float32)

The block is recomputed in float64 from the formulas of passes/src/linearize/{jetblock,
deltanet,parts}.rs (and ir/src/op.rs for the op semantics), written independently of jetc's
executor and its backward: the gated delta rule runs as a per-token recurrence from a zero
state (decay first, then the delta update, read after write), and torch autograd gives the
gradients. Needs torch and numpy only.
"""
import argparse
import re
import sys

import numpy as np
import torch
import torch.nn.functional as F

DT = torch.float64
L2_EPS = 1e-6  # parts.rs L2_EPS (fla's l2norm)
NORM_EPS = 1e-5  # parts.rs NORM_EPS (the gated output RMSNorm)
LOG_DECAY_FLOOR = -88.0  # parts.rs LOG_DECAY_FLOOR
LOSS_EPS = 1e-12  # train/src/loss.rs


def silu(x):
    return x * torch.sigmoid(x)


def l2norm_heads(x, H):
    """Per-head x / sqrt(sum x^2 + eps) of [B, T, H*d]."""
    B, T, D = x.shape
    xh = x.view(B, T, H, D // H)
    return (xh / torch.sqrt(xh.pow(2).sum(-1, keepdim=True) + L2_EPS)).reshape(B, T, D)


def causal_conv(u, ker, W):
    """silu(sum_w ker[t, c, w] * u[t - W + 1 + w, c]) with zeros before the sequence.
    u [B, T, C]; ker [B, T, C, W] (or broadcastable, e.g. [C, W] for a static kernel)."""
    B, T, C = u.shape
    u_pad = torch.cat([torch.zeros(B, W - 1, C, dtype=u.dtype), u], dim=1)
    windows = u_pad.unfold(1, W, 1)  # [B, T, C, W]: windows[b, t, c, w] = u_pad[b, t + w, c]
    return silu((windows * ker).sum(-1))


def log_decay(x, P, pre):
    a = x @ P[pre + "a_proj.weight"] + P[pre + "dt_bias"]
    # ONNX Softplus is log(1 + exp(x)); torch's threshold only differs beyond 20 (by < 1e-8).
    g = -torch.exp(P[pre + "A_log"]) * F.softplus(a)
    return torch.clamp(g, min=LOG_DECAY_FLOOR)


def gated_delta_rule(q, k, v, g, beta, scale):
    """q, k [B,T,H,dk]; v [B,T,H,dv]; g, beta [B,T,H]; zero initial state.
    Per token: S = exp(g) S; S = S + beta k (v - S^T k)^T; o = scale S^T q."""
    B, T, H, dk = q.shape
    dv = v.shape[-1]
    S = torch.zeros(B, H, dk, dv, dtype=DT)
    outs = []
    for t in range(T):
        kt, vt, qt = k[:, t], v[:, t], q[:, t]
        S = S * torch.exp(g[:, t])[..., None, None]
        u = beta[:, t][..., None] * (vt - torch.einsum("bhkv,bhk->bhv", S, kt))
        S = S + torch.einsum("bhk,bhv->bhkv", kt, u)
        outs.append(scale * torch.einsum("bhkv,bhk->bhv", S, qt))
    return torch.stack(outs, dim=1)  # [B, T, H, dv]


def block(x, P, pre, kind):
    B, T, _ = x.shape
    dv = P[pre + "o_norm.weight"].shape[0]
    Dv = P[pre + "v_proj.weight"].shape[1]
    H = Dv // dv
    Dk = P[pre + "q_proj.weight"].shape[1]
    dk = Dk // H
    assert H * dv == Dv and H * dk == Dk, f"widths {Dk}/{Dv} do not split into {H} heads"
    if kind == "jetblock":
        W = P[pre + "dynamic_conv1d.kernel_generator.w2.bias"].shape[0] // Dv
        q = l2norm_heads(silu(x @ P[pre + "q_proj.weight"]), H)
        k = l2norm_heads(silu(x @ P[pre + "k_proj.weight"]), H)
        u = x @ P[pre + "v_proj.weight"]
        hg = silu(x @ P[pre + "dynamic_conv1d.kernel_generator.w1.weight"])
        ker = hg @ P[pre + "dynamic_conv1d.kernel_generator.w2.weight"] + P[pre + "dynamic_conv1d.kernel_generator.w2.bias"]
        v = causal_conv(u, ker.view(B, T, Dv, W), W)
    else:
        W = P[pre + "q_conv1d.weight"].shape[0] // Dk
        q = l2norm_heads(causal_conv(x @ P[pre + "q_proj.weight"], P[pre + "q_conv1d.weight"].view(Dk, W), W), H)
        k = l2norm_heads(causal_conv(x @ P[pre + "k_proj.weight"], P[pre + "k_conv1d.weight"].view(Dk, W), W), H)
        v = causal_conv(x @ P[pre + "v_proj.weight"], P[pre + "v_conv1d.weight"].view(Dv, W), W)
    beta = torch.sigmoid(x @ P[pre + "b_proj.weight"])  # [B, T, H]
    g = log_decay(x, P, pre)  # [B, T, H]
    o = gated_delta_rule(q.view(B, T, H, dk), k.view(B, T, H, dk), v.view(B, T, H, dv), g, beta, dk**-0.5)
    gate = silu(x @ P[pre + "g_proj.weight"]).view(B, T, H, dv)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + NORM_EPS) * P[pre + "o_norm.weight"] * gate
    return o.reshape(B, T, Dv) @ P[pre + "o_proj.weight"]


EXPECTED = {
    "jetblock": ["A_log", "a_proj.weight", "b_proj.weight", "dt_bias", "dynamic_conv1d.kernel_generator.w1.weight",
                 "dynamic_conv1d.kernel_generator.w2.bias", "dynamic_conv1d.kernel_generator.w2.weight", "g_proj.weight",
                 "k_proj.weight", "o_norm.weight", "o_proj.weight", "q_proj.weight", "v_proj.weight"],
    "gated-deltanet": ["A_log", "a_proj.weight", "b_proj.weight", "dt_bias", "g_proj.weight", "k_conv1d.weight",
                       "k_proj.weight", "o_norm.weight", "o_proj.weight", "q_conv1d.weight", "q_proj.weight",
                       "v_conv1d.weight", "v_proj.weight"],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inp")
    ap.add_argument("out")
    ap.add_argument("--block", required=True, choices=sorted(EXPECTED))
    args = ap.parse_args()
    prefix = {"jetblock": "jet", "gated-deltanet": "gated_deltanet"}[args.block]
    data = np.load(args.inp)
    pat = re.compile(r"^layers\.(\d+)\." + prefix + r"\.(.+)$")
    names = [n for n in data.files if pat.match(n)]
    layers = sorted({pat.match(n).group(1) for n in names})
    if len(layers) != 1:
        sys.exit(f"expected the weights of exactly one `{prefix}` layer in {args.inp}, found layers {layers}")
    pre = f"layers.{layers[0]}.{prefix}."
    got = sorted(n[len(pre):] for n in names)
    if got != sorted(EXPECTED[args.block]):
        sys.exit(f"{args.block} weights in {args.inp}: {got}, expected {sorted(EXPECTED[args.block])}")
    P = {n: torch.from_numpy(data[n].astype(np.float64)).requires_grad_(True) for n in names}
    x = torch.from_numpy(data["x"].astype(np.float64))
    y_t = torch.from_numpy(data["y_t"].astype(np.float64))
    y_s = block(x, P, pre, args.block)
    loss = (y_s - y_t).pow(2).sum() / (y_t.pow(2).sum() + LOSS_EPS)
    grads = torch.autograd.grad(loss, [P[n] for n in names])
    out = {"loss": np.array(loss.item(), dtype=np.float32), "y_s": y_s.detach().numpy().astype(np.float32)}
    for n, g in zip(names, grads):
        out["grad." + n] = g.numpy().astype(np.float32)
    np.savez(args.out, **out)
    print(f"torch_grads: {args.block} layer {layers[0]}, x {tuple(x.shape)}, loss {loss.item():.9e}, {len(names)} gradients")


if __name__ == "__main__":
    main()
