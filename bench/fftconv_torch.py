#!/usr/bin/env python3
"""PyTorch's side of bench/fftconv.sh: the FFT long convolution as the safari
(Hyena) code writes it,
    y = irfft(rfft(u, n=2T) * rfft(k, n=2T), n=2T)[..., :T] + u * D
forward under no_grad, and forward + backward through autograd (gradients of
u, k and D), f32, on the same sizes and with the same timing as
bench/fftconv_bench.cpp (median wall time of --iters runs after warmup).
Prints one line per T:
  torch device=cpu T=1024 B=64 C=768 fwd_ms=... fwdbwd_ms=...
Exits 2 for --device cuda when torch has no CUDA device."""
import argparse
import sys
import time

import torch


def fftconv(u, k, D):
    T = u.shape[-1]
    n = 2 * T
    k_f = torch.fft.rfft(k, n=n)
    u_f = torch.fft.rfft(u, n=n)
    y = torch.fft.irfft(u_f * k_f, n=n)[..., :T]
    return y + u * D.unsqueeze(-1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=64 * 768)
    p.add_argument("--channels", type=int, default=768)
    p.add_argument("--seq", type=int, default=0)
    p.add_argument("--max-seq", type=int, default=65536)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave)")
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if a.device == "cuda" and not torch.cuda.is_available():
        print("fftconv_torch: torch sees no CUDA device; nothing to time")
        return 2
    if a.rows % a.channels:
        print("fftconv_torch: --rows must be a multiple of --channels", file=sys.stderr)
        return 1
    dev = torch.device(a.device)
    C, B = a.channels, a.rows // a.channels
    seqs = [a.seq] if a.seq else [T for T in (1024 << i for i in range(20)) if T <= a.max_seq]

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def time_ms(fn):
        for _ in range(a.warmup):
            fn()
        sync()
        ms = []
        for _ in range(a.iters):
            t0 = time.perf_counter()
            fn()
            sync()
            ms.append((time.perf_counter() - t0) * 1e3)
        ms.sort()
        return ms[len(ms) // 2]

    for T in seqs:
        u = torch.randn(B, C, T, device=dev, requires_grad=True)
        k = torch.randn(C, T, device=dev, requires_grad=True)
        D = torch.randn(C, device=dev, requires_grad=True)
        dy = torch.randn(B, C, T, device=dev)

        def fwd():
            with torch.no_grad():
                fftconv(u, k, D)

        def fwdbwd():
            u.grad = k.grad = D.grad = None
            fftconv(u, k, D).backward(dy)

        f = time_ms(fwd)
        fb = time_ms(fwdbwd)
        print(f"torch device={a.device} T={T} B={B} C={C} fwd_ms={f:.2f} fwdbwd_ms={fb:.2f}",
              flush=True)
        del u, k, D, dy
    return 0


if __name__ == "__main__":
    sys.exit(main())
