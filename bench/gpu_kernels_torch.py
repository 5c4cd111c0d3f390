#!/usr/bin/env python3
"""The reference for bench/gpu_kernels_bench.cpp: the same work in PyTorch
eager on the same GPU, timed the same way, printing the same lines.

  copy_dense            dst.copy_(src), f32, copy_mb MiB
  copy_strided          (R, 4096) rows of a (R, 4224) buffer, .contiguous()
  layernorm_fwd         F.layer_norm (weight and bias in x's dtype)
  layernorm_bwd         torch.autograd.grad of that layer_norm for x, weight
                        and bias (one native_layer_norm_backward)
  cross_entropy_fwd_bwd F.cross_entropy(logits, i64 targets) + backward()
  adamw                 torch.optim.AdamW(fused=True), and (variant=foreach)
                        AdamW(foreach=True), over GPT-2's parameter set
  grad_norm             vector_norm of torch._foreach_norm(grads), .item()

Timing, as in the C++: one CUDA event pair around each call on the current
stream, an L2 flush (a --flush-mb MiB zero_()) before each, outside the
events; the median of --iters calls after --warmup. Bytes are the same
minimum counts as the C++ (see its comments), so keel/torch is a time ratio.

Prints `device ...` then `result kernel=K dtype=D shape=S [variant=X]
bytes=N ms=MEDIAN ms_min=MIN gbps=G` lines. Without a CUDA device (e.g.
Debian's CPU-only python3-torch) it says so on stderr and exits with 2.
"""
import argparse
import math
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"gpu_kernels_torch: cannot import torch ({e}); nothing measured", file=sys.stderr)
    sys.exit(2)


def shapes(s):
    out = []
    for item in filter(None, s.split(",")):
        r, c = item.split("x")
        out.append((int(r), int(c)))
    return out


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--copy-mb", type=int, default=1024)
    p.add_argument("--ln", type=shapes, default=shapes("16384x768,8192x4096"))
    p.add_argument("--ce", type=shapes, default=shapes("8192x50304"))
    p.add_argument("--dtypes", default="bf16,f32")
    p.add_argument("--gpt", default="12,768,1024,50304", help="LAYERS,WIDTH,CTX,VOCAB")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--flush-mb", type=int, default=512)
    a = p.parse_args()
    a.dtypes = [d for d in a.dtypes.split(",") if d]
    for d in a.dtypes:
        if d not in ("bf16", "f32", "f16"):
            p.error(f"--dtypes: unknown dtype '{d}'")
    g = [int(v) for v in a.gpt.split(",")]
    if len(g) != 4:
        p.error("--gpt needs LAYERS,WIDTH,CTX,VOCAB")
    a.gpt_layers, a.gpt_width, a.gpt_ctx, a.gpt_vocab = g
    if a.iters < 1 or a.warmup < 0 or a.flush_mb < 0 or a.copy_mb < 0:
        p.error("--iters must be positive; --warmup, --flush-mb and --copy-mb non-negative")
    return a


DTYPES = {"bf16": torch.bfloat16, "f32": torch.float32, "f16": torch.float16}
ELEM = {"bf16": 2, "f32": 4, "f16": 2}


class Timer:
    def __init__(self, dev, a):
        self.iters, self.warmup = a.iters, a.warmup
        self.flush_buf = (torch.empty(a.flush_mb << 20, dtype=torch.uint8, device=dev)
                          if a.flush_mb > 0 else None)

    def flush(self):
        if self.flush_buf is not None:
            self.flush_buf.zero_()

    def run(self, fn):
        for _ in range(self.warmup):
            self.flush()
            fn()
        start = [torch.cuda.Event(enable_timing=True) for _ in range(self.iters)]
        stop = [torch.cuda.Event(enable_timing=True) for _ in range(self.iters)]
        torch.cuda.synchronize()
        for i in range(self.iters):
            self.flush()
            start[i].record()
            fn()
            stop[i].record()
        torch.cuda.synchronize()
        ms = sorted(s.elapsed_time(e) for s, e in zip(start, stop))
        n = len(ms)
        median = ms[n // 2] if n % 2 else 0.5 * (ms[n // 2 - 1] + ms[n // 2])
        return median, ms[0]


def report(kernel, dtype, shape, nbytes, stats, variant=None):
    median, lo = stats
    v = f" variant={variant}" if variant else ""
    print(f"result kernel={kernel} dtype={dtype} shape={shape}{v} bytes={nbytes} "
          f"ms={median:.5f} ms_min={lo:.5f} gbps={nbytes / (median * 1e-3) / 1e9:.1f}", flush=True)


def bench_copy(timer, dev, copy_mb):
    n = (copy_mb << 20) // 4
    src = torch.randn(n, device=dev)
    dst = torch.empty(n, device=dev)
    report("copy_dense", "f32", str(n), 2 * n * 4, timer.run(lambda: dst.copy_(src)))
    del src, dst
    cols, pad = 4096, 128
    rows = max(1, n // cols)
    wide = torch.randn(rows, cols + pad, device=dev)
    view = wide.narrow(1, 0, cols)
    report("copy_strided", "f32", f"{rows}x{cols}", 2 * rows * cols * 4,
           timer.run(lambda: view.contiguous()))


def bench_layernorm(timer, dev, R, C, dt):
    dtype, e = DTYPES[dt], ELEM[dt]
    x = torch.randn(R, C, device=dev, dtype=dtype)
    dy = torch.randn(R, C, device=dev, dtype=dtype)
    w = torch.randn(C, device=dev, dtype=dtype)
    b = torch.randn(C, device=dev, dtype=dtype)
    eps = 1e-5
    shape = f"{R}x{C}"
    with torch.no_grad():
        report("layernorm_fwd", dt, shape, 2 * R * C * e + 2 * C * 4 + 2 * R * 4,
               timer.run(lambda: F.layer_norm(x, (C,), w, b, eps)))
    xg, wg, bg = (t.detach().requires_grad_() for t in (x, w, b))
    y = F.layer_norm(xg, (C,), wg, bg, eps)
    report("layernorm_bwd", dt, shape, 3 * R * C * e + 2 * R * 4 + 3 * C * 4,
           timer.run(lambda: torch.autograd.grad(y, (xg, wg, bg), dy, retain_graph=True)))


def bench_cross_entropy(timer, dev, N, V, dt):
    dtype, e = DTYPES[dt], ELEM[dt]
    logits = torch.randn(N, V, device=dev, dtype=dtype).requires_grad_()
    gen = torch.Generator().manual_seed(1337)
    targets = torch.randint(0, V, (N,), generator=gen, dtype=torch.int64).to(dev)

    def step():
        logits.grad = None  # a fresh gradient each call, as keel's backward returns one
        F.cross_entropy(logits, targets).backward()

    report("cross_entropy_fwd_bwd", dt, f"{N}x{V}", 2 * N * V * e + N * 8, timer.run(step))


def gpt2_shapes(a):
    """GPT-2's parameter shapes in state-dict order, as in the C++."""
    C = a.gpt_width
    s = [(a.gpt_vocab, C), (a.gpt_ctx, C)]
    for _ in range(a.gpt_layers):
        s += [(C,), (C,), (3 * C, C), (3 * C,), (C, C), (C,), (C,), (C,), (4 * C, C), (4 * C,),
              (C, 4 * C), (C,)]
    return s + [(C,), (C,)]


def bench_optimizer(timer, dev, a):
    sh = gpt2_shapes(a)
    n = sum(math.prod(s) for s in sh)
    shape = f"{len(sh)}t:{n}"
    for variant in ("fused", "foreach"):
        params = [torch.randn(s, device=dev).requires_grad_() for s in sh]
        for p in params:
            p.grad = torch.randn_like(p)
        kw = {"fused": True} if variant == "fused" else {"foreach": True}
        opt = torch.optim.AdamW(params, lr=6e-4, betas=(0.9, 0.95), eps=1e-8,
                                weight_decay=0.1, **kw)
        report("adamw", "f32", shape, 28 * n, timer.run(opt.step), variant=variant)
        if variant == "fused":
            grads = [p.grad for p in params]

            def norm():
                return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))).item()

            report("grad_norm", "f32", shape, 4 * n, timer.run(norm))
        del opt, params


def main():
    a = parse()
    if not torch.cuda.is_available():
        print(f"gpu_kernels_torch: torch {torch.__version__} at {sys.executable} has no CUDA "
              "device (torch.cuda.is_available() is False: a CPU-only build, or no GPU "
              "visible); nothing measured", file=sys.stderr)
        sys.exit(2)
    dev = torch.device("cuda", 0)
    props = torch.cuda.get_device_properties(dev)
    print(f'device name="{props.name}" sms={props.multi_processor_count} '
          f"mem_gb={props.total_memory / 2**30:.1f} torch={torch.__version__} "
          f"cuda={torch.version.cuda} iters={a.iters} warmup={a.warmup} flush_mb={a.flush_mb}",
          flush=True)
    timer = Timer(dev, a)
    if a.copy_mb > 0:
        bench_copy(timer, dev, a.copy_mb)
    for dt in a.dtypes:
        for R, C in a.ln:
            bench_layernorm(timer, dev, R, C, dt)
    for dt in a.dtypes:
        for N, V in a.ce:
            bench_cross_entropy(timer, dev, N, V, dt)
    if a.gpt_layers > 0:
        bench_optimizer(timer, dev, a)


if __name__ == "__main__":
    main()
