#!/usr/bin/env python3
"""Reference for bench/selective_scan_bench.cpp: Mamba-1's selective scan as a
vectorised PyTorch program, forward and backward by autograd, on the CPU.

Chunked: within a chunk of L steps the log decays S_t = sum_{r<=t} dt_r A
come from a cumsum, the decay from step s to step t is exp(S_t - S_s)
(masked to s <= t), and the chunk's states are one batched matmul of that
(L, L) decay with the inputs dt_s u_s B_s, plus exp(S_t) times the state
carried in from the previous chunk. Autograd keeps every chunk's
(B, D, N, L, L) decay for the backward, about 12 B*D*N*T*L bytes in all, so
forward + backward runs only where that fits in --max-gib (torch 1.13's
torch.utils.checkpoint did not lower the peak here); the forward alone runs
under no_grad at any T. Denormals are flushed (torch.set_flush_denormal):
products of decays near exp(-80) with the inputs are denormal and cost
100x on this CPU.

Same sizes, options (softplus(delta + delta_bias), D skip, SiLU(z) gate) and
input ranges as the keel bench. Prints one line per T:
  torch B=.. D=.. N=.. T=.. fwd_ms=.. fwdbwd_ms=..
Before timing it checks itself against a plain sequential scan at a small size.
"""
import argparse
import time

import torch
import torch.nn.functional as F


def chunk_scan(dt, u, Bc, Cc, A, x0):
    """dt, u (b, d, l); Bc, Cc (b, n, l); A (d, n); x0 (b, d, n) -> y (b, d, l), x_last."""
    l = dt.shape[-1]
    S = torch.cumsum(dt.unsqueeze(2) * A[None, :, :, None], dim=-1)  # (b, d, n, l)
    diff = S.unsqueeze(-1) - S.unsqueeze(-2)  # (b, d, n, l, l): [t, s] = S_t - S_s
    causal = torch.ones(l, l, dtype=torch.bool).tril()
    # Decays clamped at exp(-60) ~ 1e-26 (here and for the carried state below; a term
    # below that is lost in f32 next to the current input's): smaller decays times the inputs go denormal, which costs 100x per element
    # on this CPU, in every intra-op thread (set_flush_denormal covers only the main one).
    decay = diff.clamp(min=-60.0).masked_fill(~causal, float("-inf")).exp()
    inp = (dt * u).unsqueeze(2) * Bc.unsqueeze(1)  # (b, d, n, l)
    # sum_s decay[t, s] inp[s] as a broadcast product: one (L, L) matvec per (b, d, n) is too
    # small for a batched GEMM call each.
    xs = (decay * inp.unsqueeze(-2)).sum(-1) + S.clamp(min=-60.0).exp() * x0.unsqueeze(-1)
    y = torch.einsum("bdnl,bnl->bdl", xs, Cc)
    return y, xs[..., -1]


def scan(u, delta, A, B, C, D, z, delta_bias, L):
    dt = F.softplus(delta + delta_bias[:, None])  # (b, d, T)
    b, d, T = u.shape
    x = u.new_zeros(b, d, A.shape[1])
    ys = []
    for t0 in range(0, T, L):
        s = slice(t0, t0 + L)
        y, x = chunk_scan(dt[..., s], u[..., s], B[..., s], C[..., s], A, x)
        ys.append(y)
    y = torch.cat(ys, dim=-1) + D[:, None] * u
    return y * F.silu(z), x


def sequential(u, delta, A, B, C, D, z, delta_bias):
    dt = F.softplus(delta + delta_bias[:, None])
    x = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[-1]):
        x = torch.exp(dt[..., t, None] * A) * x + (dt[..., t] * u[..., t])[..., None] * B[:, None, :, t]
        ys.append((x * C[:, None, :, t]).sum(-1))
    return (torch.stack(ys, -1) + D[:, None] * u) * F.silu(z), x


def inputs(b, d, n, T, gen):
    def rnd(shape, lo, hi):
        return (torch.rand(shape, generator=gen) * (hi - lo) + lo).requires_grad_()

    A = (-torch.arange(1, n + 1, dtype=torch.float32)).repeat(d, 1).requires_grad_()
    return dict(u=rnd((b, d, T), -1, 1), delta=rnd((b, d, T), -4, -1), A=A,
                B=rnd((b, n, T), -1, 1), C=rnd((b, n, T), -1, 1), D=rnd((d,), 0, 1),
                z=rnd((b, d, T), -1, 1), delta_bias=rnd((d,), -1, 0))


def best_ms(repeat, f):
    f()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        best = min(best, (time.perf_counter() - t0) * 1e3)
    return best


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dim", type=int, default=1536)
    p.add_argument("--nstate", type=int, default=16)
    p.add_argument("--seq", default="1024,4096,16384")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--chunk", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-gib", type=float, default=10.0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    gen = torch.Generator().manual_seed(7)

    small = inputs(2, 5, 4, 70, gen)
    y_ref, x_ref = sequential(**small)
    y, x = scan(**small, L=16)
    assert torch.allclose(y, y_ref, rtol=1e-4, atol=1e-5), (y - y_ref).abs().max()
    assert torch.allclose(x, x_ref, rtol=1e-4, atol=1e-5), (x - x_ref).abs().max()

    print(f"# torch {torch.__version__}: {torch.get_num_threads()} threads, chunk {a.chunk}")
    for T in [int(s) for s in a.seq.split(",")]:
        ins = inputs(a.batch, a.dim, a.nstate, T, gen)
        dy = torch.rand((a.batch, a.dim, T), generator=gen) * 2 - 1

        def fwd():
            with torch.no_grad():
                scan(**ins, L=a.chunk)

        def fwdbwd():
            y, _ = scan(**ins, L=a.chunk)
            y.backward(dy)
            for t in ins.values():
                t.grad = None

        f = best_ms(a.repeat, fwd)
        gib = 12.0 * a.batch * a.dim * a.nstate * T * a.chunk / 2**30
        fb = f"{best_ms(a.repeat, fwdbwd):.2f}" if gib <= a.max_gib else "skipped"
        print(f"torch B={a.batch} D={a.dim} N={a.nstate} T={T} fwd_ms={f:.2f} fwdbwd_ms={fb}"
              f" fwdbwd_est_gib={gib:.1f}", flush=True)


if __name__ == "__main__":
    main()
