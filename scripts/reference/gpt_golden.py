#!/usr/bin/env python3
"""Golden values for keel's GPT recipe, computed by PyTorch in float64.

Regenerate (byte-for-byte identical output; needs python3-torch and python3-h5py):
    /usr/bin/python3 scripts/reference/gpt_golden.py            # writes tests/golden/gpt_tiny.h5
    /usr/bin/python3 scripts/reference/gpt_golden.py --out X.h5

The model is a tiny GPT-2 (nanoGPT layout) whose parameter names and order are
exactly those of keel's GPT::named_parameters(). Its initial weights are drawn
here from a fixed numpy seed and rounded to float32, so keel (f32) and this
reference (f64, from the same f32 values) start from identical weights. Norm
weights/biases and all biases get random perturbations so their gradients are
non-trivial. Everything after the initial weights is computed in float64.

File layout (read by tests/recipes/gpt_golden_test.cpp):
    /                       attrs: the config (vocab_size, padded_vocab_size, ...),
                                   the optimizer settings, source = this script
    /init/<name>            f32 initial weights
    /batch/ids, /targets    i64 (B, T)
    /ref/logits             f64 (B, T, V): logits over the real vocabulary
    /ref/loss               f64 scalar: mean next-token cross-entropy
    /ref/grad/<name>        f64 d loss / d param at the initial weights
    /ref/losses             f64 (steps): loss before each AdamW step
    /ref/grad_norms         f64 (steps): global gradient norm before clipping
    /ref/final/<name>       f64 weights after `steps` AdamW steps on the same batch

The optimizer is torch.optim.AdamW (lr 1e-3 constant, betas (0.9, 0.95),
eps 1e-8, weight decay 0.1 on the matrices of Linear layers only), after
clipping the gradients to global norm 1.0 the way keel does
(trainer::clip_coefficient: scale max_norm / (norm + 1e-6) when norm > max_norm).
"""

import argparse
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from golden_io import run_golden

VOCAB, PADDED_VOCAB, BLOCK, N_LAYER, N_HEAD, N_EMBD = 96, 128, 16, 2, 2, 32
B, T = 2, 16
STEPS, LR, BETAS, EPS, WD, MAX_NORM = 10, 1e-3, (0.9, 0.95), 1e-8, 0.1, 1.0
SEED = 20240607


class Linear(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, n_in, dtype=torch.float64))
        self.bias = nn.Parameter(torch.empty(n_out, dtype=torch.float64))

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class LayerNorm(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, dtype=torch.float64))
        self.bias = nn.Parameter(torch.empty(n, dtype=torch.float64))

    def forward(self, x):
        return F.layer_norm(x, (x.size(-1),), self.weight, self.bias, 1e-5)


class Embedding(nn.Module):
    def __init__(self, num, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num, dim, dtype=torch.float64))

    def forward(self, ids):
        return F.embedding(ids, self.weight)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = Linear(N_EMBD, 3 * N_EMBD)
        self.proj = Linear(N_EMBD, N_EMBD)

    def forward(self, x):
        b, t, c = x.shape
        d = c // N_HEAD
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, N_HEAD, d).transpose(1, 2) for z in (q, k, v))  # (B, H, T, D)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d))                 # (B, H, T, T)
        mask = torch.ones(t, t, dtype=torch.bool).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(b, t, c)               # (B, T, C)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = Linear(N_EMBD, 4 * N_EMBD)
        self.proj = Linear(4 * N_EMBD, N_EMBD)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = LayerNorm(N_EMBD)
        self.attn = Attention()
        self.ln_2 = LayerNorm(N_EMBD)
        self.mlp = MLP()

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = Embedding(PADDED_VOCAB, N_EMBD)
        self.wpe = Embedding(BLOCK, N_EMBD)
        self.blocks = nn.ModuleList([Block() for _ in range(N_LAYER)])
        self.ln_f = LayerNorm(N_EMBD)

    def forward(self, ids):
        pos = torch.arange(ids.size(1))
        x = self.wte(ids) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # (B, T, Vp), tied head
        return logits[..., :VOCAB]                        # (B, T, V)

    def loss(self, ids, targets):
        logits = self.forward(ids)
        return logits, F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))


def is_decayed(name):
    # keel: Linear weights only (decayed_parameter_names), not embeddings, norms or biases.
    return name.endswith(".weight") and (".attn." in name or ".mlp." in name)


def initial_weights(model, rng):
    """f32 initial values per name: GPT-2-like scales, non-trivial norms and biases."""
    proj_std = 0.02 / math.sqrt(2 * N_LAYER)
    out = {}
    for name, p in model.named_parameters():
        shape = tuple(p.shape)
        if name in ("wte.weight", "wpe.weight"):
            w = rng.normal(0.0, 0.02, shape)
        elif ".ln_" in name or name.startswith("ln_f."):
            w = (1.0 if name.endswith(".weight") else 0.0) + rng.normal(0.0, 0.1, shape)
        elif name.endswith(".bias"):
            w = rng.normal(0.0, 0.02, shape)
        elif name.endswith("proj.weight"):
            w = rng.normal(0.0, proj_std, shape)
        else:
            w = rng.normal(0.0, 0.02, shape)
        out[name] = w.astype(np.float32)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.normpath(
        os.path.join(here, "..", "..", "tests", "golden", "gpt_tiny.h5")))
    args = ap.parse_args()
    run_golden(GPT(), initial_weights, is_decayed, args.out, vocab=VOCAB, batch=B, seq=T,
               steps=STEPS, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, max_norm=MAX_NORM,
               seed=SEED,
               int_attrs=[("vocab_size", VOCAB), ("padded_vocab_size", PADDED_VOCAB),
                   ("block_size", BLOCK), ("n_layer", N_LAYER), ("n_head", N_HEAD),
                   ("n_embd", N_EMBD)],
               float_attrs=[],
               source="scripts/reference/gpt_golden.py")


if __name__ == "__main__":
    main()
