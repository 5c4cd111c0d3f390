#!/usr/bin/env python3
"""Golden values for keel's Hyena recipe, computed by PyTorch in float64.

Regenerate (byte-for-byte identical output; needs python3-torch and python3-h5py):
    /usr/bin/python3 scripts/reference/hyena_golden.py          # writes tests/golden/hyena_tiny.h5
    /usr/bin/python3 scripts/reference/hyena_golden.py --out X.h5

Written from the Hyena paper (Poli et al. 2023, "Hyena Hierarchy", Sec. 3 and
App. D): the order-N operator projects the input to N+1 streams, filters them
with a short causal depthwise convolution, and applies N-1 long implicit
convolutions interleaved with elementwise gates,

    z = short_conv(in_proj(u)) = (x_1, ..., x_N, v)
    v <- h_i * (v . x_i) + D_i (v . x_i)     for i = N, N-1, ..., 2
    y = out_proj(v . x_1)

where "*" is causal convolution over the sequence. The filters h_i are
produced per step by a small MLP of the positional features of t (t, then
cos/sin bands), with Sin activations sharing one learnable frequency, and
modulated by an exponential decay that is fast for the first channels and
slow for the last. The language model is GPT-2's pre-LN residual stack with
the operator in place of attention and no positional embedding (the
convolutions carry position), a GELU-tanh MLP, and the head tied to the
token embedding. Convolutions here are computed by the FFT at 2T, in float64.

Parameter names and order are those of keel's hyena::HyenaLM::named_parameters().
Initial weights are drawn from a fixed numpy seed and rounded to float32 so
that keel (f32) and this reference (f64 of the same values) start equal.

File layout (read by tests/recipes/hyena_golden_test.cpp): as gpt_golden.py's,
with the Hyena sizes as attributes (order, filter_order, emb_dim, ...).
"""

import argparse
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from golden_io import run_golden

VOCAB, PADDED_VOCAB, BLOCK, N_LAYER, N_EMBD = 96, 128, 20, 2, 16
ORDER, FILTER_ORDER, EMB_DIM, SHORT, INNER = 3, 8, 5, 3, 2
FAST, SLOW, TARGET, SHIFT = 0.3, 1.5, 1e-2, 0.0
B, T = 2, 16  # T < BLOCK: the filters are generated at BLOCK positions and cut to T
STEPS, LR, BETAS, EPS, WD, MAX_NORM = 5, 1e-3, (0.9, 0.95), 1e-8, 0.1, 1.0
SEED = 20261204
f64 = torch.float64


def param(*shape):
    return nn.Parameter(torch.empty(*shape, dtype=f64))


def positional_features(L):
    """(L, EMB_DIM): t in [0, 1], then cos and -sin of bands of 2 pi k t."""
    t = torch.linspace(0, 1, L, dtype=f64)[:, None]
    bands = (EMB_DIM - 1) // 2
    w = 2 * math.pi * torch.arange(L, dtype=f64)[:, None] / L
    f = torch.linspace(1e-4, bands - 1, bands, dtype=f64)[None, :]
    return torch.cat([t, torch.cos(f * w), -torch.sin(f * w)], dim=1), t


class HyenaFilter(nn.Module):
    def __init__(self, channels):
        super().__init__()
        # mlp.0: EMB_DIM -> FILTER_ORDER, mlp.1..INNER: FILTER_ORDER -> FILTER_ORDER
        self.mlp = nn.ModuleList()
        for i in range(INNER + 1):
            m = nn.Module()
            m.weight = param(FILTER_ORDER, EMB_DIM if i == 0 else FILTER_ORDER)
            m.bias = param(FILTER_ORDER)
            self.mlp.append(m)
        self.freq = param(FILTER_ORDER)      # one Sin frequency, shared by every activation
        self.out = nn.Module()
        self.out.weight = param(channels, FILTER_ORDER)  # no bias
        self.bias = param(channels)          # the D term of each convolution
        self.channels = channels

    def forward(self, L):
        z, t = positional_features(BLOCK)
        h = z
        for m in self.mlp:
            h = torch.sin(self.freq * F.linear(h, m.weight, m.bias))
        h = F.linear(h, self.out.weight)                               # (BLOCK, channels)
        max_decay, min_decay = math.log(TARGET) / FAST, math.log(TARGET) / SLOW
        deltas = torch.linspace(min_decay, max_decay, self.channels, dtype=f64)[None, :]
        h = h * (torch.exp(-t * deltas.abs()) + SHIFT)
        return h[:L].t()                                               # (channels, L)


def fftconv(u, k, D):
    """u (B, C, L), k (C, L), D (C): causal convolution by FFT at 2L, plus u D."""
    L = u.size(-1)
    y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(k, n=2 * L), n=2 * L)[..., :L]
    return y + u * D[:, None]


class HyenaOperator(nn.Module):
    def __init__(self):
        super().__init__()
        C = N_EMBD
        self.in_proj = nn.Module()
        self.in_proj.weight, self.in_proj.bias = param((ORDER + 1) * C, C), param((ORDER + 1) * C)
        self.short_filter = nn.Module()
        self.short_filter.weight = param((ORDER + 1) * C, SHORT)
        self.short_filter.bias = param((ORDER + 1) * C)
        self.filter = HyenaFilter((ORDER - 1) * C)
        self.out_proj = nn.Module()
        self.out_proj.weight, self.out_proj.bias = param(C, C), param(C)

    def forward(self, u):
        b, L, C = u.shape
        z = F.linear(u, self.in_proj.weight, self.in_proj.bias).transpose(1, 2)  # (B, (N+1)C, L)
        z = F.conv1d(z, self.short_filter.weight[:, None, :], self.short_filter.bias,
                     padding=SHORT - 1, groups=(ORDER + 1) * C)[..., :L]
        *x, v = z.split(C, dim=1)
        k = self.filter(L).reshape(ORDER - 1, C, L)
        D = self.filter.bias.reshape(ORDER - 1, C)
        for o, xi in enumerate(reversed(x[1:])):
            v = fftconv(v * xi, k[o], D[o])
        y = (v * x[0]).transpose(1, 2)                                         # (B, L, C)
        return F.linear(y, self.out_proj.weight, self.out_proj.bias)


class LayerNorm(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight, self.bias = param(n), param(n)

    def forward(self, x):
        return F.layer_norm(x, (x.size(-1),), self.weight, self.bias, 1e-5)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.proj = nn.Module(), nn.Module()
        self.fc.weight, self.fc.bias = param(4 * N_EMBD, N_EMBD), param(4 * N_EMBD)
        self.proj.weight, self.proj.bias = param(N_EMBD, 4 * N_EMBD), param(N_EMBD)

    def forward(self, x):
        h = F.gelu(F.linear(x, self.fc.weight, self.fc.bias), approximate="tanh")
        return F.linear(h, self.proj.weight, self.proj.bias)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = LayerNorm(N_EMBD)
        self.mixer = HyenaOperator()
        self.ln_2 = LayerNorm(N_EMBD)
        self.mlp = MLP()

    def forward(self, x):
        x = x + self.mixer(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class HyenaLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Module()
        self.wte.weight = param(PADDED_VOCAB, N_EMBD)
        self.blocks = nn.ModuleList([Block() for _ in range(N_LAYER)])
        self.ln_f = LayerNorm(N_EMBD)

    def forward(self, ids):
        x = F.embedding(ids, self.wte.weight)
        for block in self.blocks:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)[..., :VOCAB]  # (B, T, V), tied head

    def loss(self, ids, targets):
        logits = self.forward(ids)
        return logits, F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))


def is_decayed(name):
    # keel: the matrices of the projections and the MLP (not the filter MLP,
    # whose weight decay Hyena sets to 0, nor convolutions, norms, biases).
    return name.endswith(".weight") and any(
        s in name for s in (".in_proj.", ".out_proj.", ".mlp.fc.", ".mlp.proj."))


def initial_weights(model, rng):
    """f32 initial values per name: GPT-2-like scales, non-trivial norms, biases and filters."""
    proj_std = 0.02 / math.sqrt(2 * N_LAYER)
    out = {}
    for name, p in model.named_parameters():
        shape = tuple(p.shape)
        if ".ln_" in name or name.startswith("ln_f."):
            w = (1.0 if name.endswith(".weight") else 0.0) + rng.normal(0.0, 0.1, shape)
        elif name.endswith("filter.freq"):
            w = 1.0 + rng.normal(0.0, 0.1, shape)
        elif ".filter." in name or ".short_filter." in name:
            # O(1) filters, so the long convolutions matter to the output.
            w = rng.uniform(-1.0, 1.0, shape) / math.sqrt(shape[-1] if len(shape) > 1 else 1)
        elif name.endswith(".bias"):
            w = rng.normal(0.0, 0.02, shape)
        elif name.endswith("out_proj.weight") or name.endswith("mlp.proj.weight"):
            w = rng.normal(0.0, proj_std, shape)
        else:
            w = rng.normal(0.0, 0.02 if name == "wte.weight" else 0.2, shape)
        out[name] = w.astype(np.float32)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.normpath(
        os.path.join(here, "..", "..", "tests", "golden", "hyena_tiny.h5")))
    args = ap.parse_args()
    run_golden(HyenaLM(), initial_weights, is_decayed, args.out, vocab=VOCAB, batch=B, seq=T,
               steps=STEPS, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, max_norm=MAX_NORM,
               seed=SEED,
               int_attrs=[("vocab_size", VOCAB), ("padded_vocab_size", PADDED_VOCAB),
                   ("block_size", BLOCK), ("n_layer", N_LAYER), ("n_embd", N_EMBD),
                   ("order", ORDER), ("filter_order", FILTER_ORDER), ("emb_dim", EMB_DIM),
                   ("short_filter_order", SHORT), ("filter_inner_layers", INNER)],
               float_attrs=[("fast_decay_pct", FAST), ("slow_decay_pct", SLOW), ("decay_target", TARGET),
                     ("modulation_shift", SHIFT)],
               source="scripts/reference/hyena_golden.py")


if __name__ == "__main__":
    main()
