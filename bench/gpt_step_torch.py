#!/usr/bin/python3
"""The reference for bench/gpt_step_bench.cpp: the same GPT-2 model in PyTorch
(learned positions, pre-LN blocks, GELU-tanh MLP, tied embeddings, vocab padded
to a multiple of 128 and cut back before the loss), the same fixed random
batch sizes, the same step (forward, backward, clip_grad_norm_ to 1.0, AdamW
with weight decay on Linear weights only, zero_grad), timed after warmup.

Prints one line: `torch tokens_per_s=... ms_per_step=... min_ms=... fwd_ms=... bwd_ms=...
opt_ms=...` (means over the timed steps; min_ms the fastest step).
On the CPU with Debian's python3-torch 1.13 there is no
scaled_dot_product_attention and no fused AdamW, so attention is the explicit
masked softmax and the optimizer uses foreach=True. With --device cuda
(PyTorch 2.x), attention is F.scaled_dot_product_attention (causal, its
flash backend for bf16/fp16), AdamW is fused=True, and --precision bf16/fp16
runs the forward under torch.autocast (fp16 with the same fixed loss scale
1024 as keel's bench); phases are timed with torch.cuda.synchronize().
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, c, h, n_layer):
        super().__init__()
        self.h = h
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)
        self.proj_std = 0.02 / math.sqrt(2 * n_layer)

    def forward(self, x, mask):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.h, C // self.h).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.h, C // self.h).transpose(1, 2)
        v = v.view(B, T, self.h, C // self.h).transpose(1, 2)
        if x.is_cuda and hasattr(F, "scaled_dot_product_attention"):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # (B, H, T, T)
        att = att.masked_fill(mask[:, :, :T, :T] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.proj(y)


class Block(nn.Module):
    def __init__(self, c, h, n_layer):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c)
        self.attn = Attention(c, h, n_layer)
        self.ln_2 = nn.LayerNorm(c)
        self.fc = nn.Linear(c, 4 * c)
        self.proj = nn.Linear(4 * c, c)

    def forward(self, x, mask):
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.proj(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab, padded_vocab, block_size, n_layer, n_head, n_embd):
        super().__init__()
        self.vocab = vocab
        self.wte = nn.Embedding(padded_vocab, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, n_layer) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.register_buffer("mask", torch.tril(torch.ones(block_size, block_size))
                             .view(1, 1, block_size, block_size))
        proj_std = 0.02 / math.sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, std=proj_std)
            elif name.endswith("weight") and p.dim() == 2:
                nn.init.normal_(p, std=0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def loss(self, ids, targets):
        T = ids.size(1)
        pos = torch.arange(T, dtype=torch.long, device=ids.device)
        x = self.wte(ids) + self.wpe(pos)
        for b in self.blocks:
            x = b(x, self.mask)
        x = self.ln_f(x)
        logits = F.linear(x, self.wte.weight)[:, :, : self.vocab]  # (B, T, V), tied
        return F.cross_entropy(logits.reshape(-1, self.vocab), targets.reshape(-1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    a = p.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpt_step_torch.py: --device cuda but torch sees no CUDA device")
    dev = torch.device(a.device)
    cuda = a.device == "cuda"
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[a.precision]
    loss_scale = 1024.0 if a.precision == "fp16" else 1.0

    def sync():
        if cuda:
            torch.cuda.synchronize()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    padded = (a.vocab + 127) // 128 * 128
    model = GPT(a.vocab, padded, a.seq, a.layers, a.heads, a.width).to(dev)
    model.train()
    # Weight decay on Linear weights only, as keel's decayed_parameter_names().
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and not n.startswith(("wte", "wpe"))]
    other = [p for n, p in model.named_parameters() if not (p.dim() == 2 and not n.startswith(("wte", "wpe")))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": other, "weight_decay": 0.0}],
                            lr=6e-4, betas=(0.9, 0.95), eps=1e-8,
                            **({"fused": True} if cuda else {"foreach": True}))

    data = torch.randint(0, a.vocab, (a.batch, a.seq + 1))
    ids, targets = data[:, :-1].contiguous().to(dev), data[:, 1:].contiguous().to(dev)  # (B, T)

    fwd = bwd = opt_t = total = 0.0
    best = float("inf")
    loss_v = 0.0
    for s in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        if amp_dtype is None:
            loss = model.loss(ids, targets)
        else:
            with torch.autocast(device_type=a.device, dtype=amp_dtype):
                loss = model.loss(ids, targets)
        loss_v = loss.item()
        t1 = time.perf_counter()
        (loss * loss_scale if loss_scale != 1.0 else loss).backward()
        sync()
        t2 = time.perf_counter()
        if loss_scale != 1.0:
            for q in model.parameters():
                q.grad.div_(loss_scale)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        t3 = time.perf_counter()
        if s >= a.warmup:
            fwd += t1 - t0
            bwd += t2 - t1
            opt_t += t3 - t2
            total += t3 - t0
            best = min(best, t3 - t0)
    n = a.steps
    ms = 1000.0 * total / n
    nparams = sum(p.numel() for p in model.parameters())
    print(f"torch tokens_per_s={a.batch * a.seq / (ms / 1000.0):.1f} ms_per_step={ms:.2f} min_ms={1000 * best:.2f}"
          f" fwd_ms={1000 * fwd / n:.2f} bwd_ms={1000 * bwd / n:.2f} opt_ms={1000 * opt_t / n:.2f}"
          f" loss={loss_v:.4f} params={nparams} threads={torch.get_num_threads()}"
          f" layers={a.layers} width={a.width} heads={a.heads} seq={a.seq} batch={a.batch}"
          f" vocab={a.vocab} steps={a.steps} device={a.device} precision={a.precision}"
          f" torch={torch.__version__}", flush=True)


if __name__ == "__main__":
    main()
