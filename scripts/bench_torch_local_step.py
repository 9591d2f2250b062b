"""PyTorch peer of `cargo run --release -p jetc-train --example local_step`: one local-
distillation step of a JetBlock at SmolLM2-135M dims (hidden 576, 9 heads, d_k 48, d_v 128,
conv 4, generator 144) in fp32 with autograd: forward (the per-token gated delta rule of
scripts/jet_reference.py), normalized-MSE loss against a target, backward, AdamW.

Usage: python scripts/bench_torch_local_step.py [--seq 512] [--batch 8] [--steps 3] [--threads 2]
Prints one markdown row per step (tokens/s).
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
import jet_reference as ref  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    ref.DT = torch.float32
    hidden, H, dk, dv, W, red = 576, 9, 48, 128, 4, 8
    Dv = H * dv
    g = torch.Generator().manual_seed(0)
    shapes = {
        "q_proj.weight": (H * dk, hidden), "k_proj.weight": (H * dk, hidden), "v_proj.weight": (Dv, hidden),
        "dynamic_conv1d.kernel_generator.w1.weight": (Dv // red, hidden),
        "dynamic_conv1d.kernel_generator.w2.weight": (Dv * W, Dv // red),
        "dynamic_conv1d.kernel_generator.w2.bias": (Dv * W,),
        "b_proj.weight": (H, hidden), "a_proj.weight": (H, hidden), "A_log": (H,), "dt_bias": (H,),
        "g_proj.weight": (Dv, hidden), "o_norm.weight": (dv,), "o_proj.weight": (hidden, Dv),
    }
    params = {k: (torch.randn(*s, generator=g) * 0.02).requires_grad_() for k, s in shapes.items()}
    jcfg = {"num_heads": H, "head_dim": dk, "conv_size": W, "norm_eps": 1e-5, "expand_v": dv / dk, "dconv_generator_reduction": red}
    opt = torch.optim.AdamW(params.values(), lr=1e-3, weight_decay=0.01)
    x = torch.randn(a.batch, a.seq, hidden, generator=g)
    y_t = torch.randn(a.batch, a.seq, hidden, generator=g)
    print(f"| PyTorch {torch.__version__} | {a.seq} x {a.batch} | {a.threads} | step s | tokens/s |")
    print("|---|---|---|---|---|")
    for _ in range(a.steps):
        t = time.perf_counter()
        y = ref.jet_block(x, lambda n: params[n], "", jcfg)
        loss = ((y - y_t) ** 2).sum() / (y_t**2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        s = time.perf_counter() - t
        print(f"| JetBlock fwd+bwd+AdamW | | | {s:.2f} | {a.seq * a.batch / s:.0f} |")


if __name__ == "__main__":
    main()
