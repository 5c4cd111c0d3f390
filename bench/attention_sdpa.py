#!/usr/bin/env python3
"""PyTorch's side of bench/attention.sh: scaled_dot_product_attention forced
to its flash backend, bf16, on the same configurations and with the same
FLOP count and timing as bench/attention_bench.cpp (CUDA events after
warmup). Prints one line per configuration:
  torch T=1024 B=16 H=32 D=64 causal=0 fwd_ms=... fwdbwd_ms=... fwd_tflops=... fwdbwd_tflops=...
Exits 2 when torch has no CUDA device."""
import argparse
import sys

import torch
import torch.nn.functional as F


def flash_only():
    # torch >= 2.3 has torch.nn.attention.sdpa_kernel; older ones the
    # torch.backends.cuda context manager. Either way only flash may run, so a
    # configuration it cannot take fails instead of timing another kernel.
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(SDPBackend.FLASH_ATTENTION)
    except ImportError:
        return torch.backends.cuda.sdp_kernel(
            enable_flash=True, enable_math=False, enable_mem_efficient=False)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seq", type=int, default=0)
    p.add_argument("--dim", type=int, default=0)
    p.add_argument("--causal", type=int, default=-1)
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    a = p.parse_args()
    if not torch.cuda.is_available():
        print("attention_sdpa: torch sees no CUDA device; nothing to time")
        return 2
    seqs = [a.seq] if a.seq else [1024, 2048, 4096, 8192, 16384]
    dims = [a.dim] if a.dim else [64, 128]
    causals = [a.causal] if a.causal >= 0 else [0, 1]
    n = a.tokens * a.width
    dev = torch.device("cuda", 0)
    flat = [torch.randn(n, device=dev, dtype=torch.bfloat16) for _ in range(4)]
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def time_ms(fn):
        for _ in range(a.warmup):
            fn()
        start.record()
        for _ in range(a.iters):
            fn()
        stop.record()
        stop.synchronize()
        return start.elapsed_time(stop) / a.iters

    with flash_only():
        for T in seqs:
            for D in dims:
                for causal in causals:
                    B, H = a.tokens // T, a.width // D
                    q, k, v, g = (t.view(B, H, T, D) for t in flat)
                    qr, kr, vr = (t.detach().requires_grad_(True) for t in (q, k, v))

                    def fwd():
                        with torch.no_grad():
                            F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal))

                    def fwdbwd():
                        out = F.scaled_dot_product_attention(qr, kr, vr, is_causal=bool(causal))
                        out.backward(g)

                    f = time_ms(fwd)
                    fb = time_ms(fwdbwd)
                    flops = 4.0 * B * H * T * T * D * (0.5 if causal else 1.0)
                    print(f"torch T={T} B={B} H={H} D={D} causal={causal} fwd_ms={f:.3f} "
                          f"fwdbwd_ms={fb:.3f} fwd_tflops={flops / (f * 1e9):.1f} "
                          f"fwdbwd_tflops={3.5 * flops / (fb * 1e9):.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
