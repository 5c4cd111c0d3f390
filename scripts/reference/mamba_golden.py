#!/usr/bin/env python3
"""Golden values for keel's Mamba recipe, computed by PyTorch in float64.

Regenerate (byte-for-byte identical output; needs python3-torch and python3-h5py):
    /usr/bin/python3 scripts/reference/mamba_golden.py          # writes tests/golden/mamba_tiny.h5
    /usr/bin/python3 scripts/reference/mamba_golden.py --out X.h5

Written from the Mamba paper (Gu and Dao 2023, Sec. 3 and Alg. 2) and the
formula of state-spaces/mamba's selective_scan_ref. One Mamba mixer maps
u (B, T, C) with E = expand, D = E C inner channels and N = d_state:

    (x, z) = in_proj(u)                              C -> 2 D
    x = silu(causal_depthwise_conv(x))               d_conv taps, with bias
    (dt, B, C) = x_proj(x)                           D -> dt_rank + 2 N
    delta = softplus(dt_proj.weight dt + dt_proj.bias)   dt_rank -> D
    A = -exp(A_log)                                  (D, N)
    h_t = exp(delta_t A) h_{t-1} + delta_t B_t x_t,  y_t = <C_t, h_t> + D x_t
    out = out_proj(y * silu(z))                      D -> C

The scan here is the plain sequential loop over t, in float64. The language
model is Mamba's: token embedding, n_layer residual blocks
x + mixer(RMSNorm(x)), a final RMSNorm, and the head tied to the embedding.

Parameter names and order are those of keel's mamba::MambaLM::named_parameters().
Initial weights are drawn from a fixed numpy seed and rounded to float32
(A_log, D and the dt bias as Mamba initialises them, perturbed), so that
keel (f32) and this reference (f64 of the same values) start equal.

File layout (read by tests/recipes/mamba_golden_test.cpp): as gpt_golden.py's,
with the Mamba sizes as attributes (d_state, d_conv, expand, dt_rank).
"""

import argparse
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from golden_io import run_golden

VOCAB, PADDED_VOCAB, N_LAYER, N_EMBD = 96, 128, 2, 16
D_STATE, D_CONV, EXPAND, DT_RANK = 8, 4, 2, 2
DT_MIN, DT_MAX, DT_FLOOR = 1e-3, 1e-1, 1e-4
B, T = 2, 12
STEPS, LR, BETAS, EPS, WD, MAX_NORM = 5, 1e-3, (0.9, 0.95), 1e-8, 0.1, 1.0
RMS_EPS = 1e-5
SEED = 20261205
f64 = torch.float64


def param(*shape):
    return nn.Parameter(torch.empty(*shape, dtype=f64))


def lin(n_out, n_in, bias):
    m = nn.Module()
    m.weight = param(n_out, n_in)
    if bias:
        m.bias = param(n_out)
    return m


def rmsnorm(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + RMS_EPS) * w


def selective_scan(u, delta, A, Bm, Cm, Dv, z):
    """u, delta, z (B, D, T); A (D, N); Bm, Cm (B, N, T); Dv (D): the sequential recurrence."""
    b, d, t = u.shape
    h = torch.zeros(b, d, A.size(1), dtype=f64)
    ys = []
    for i in range(t):
        dA = torch.exp(delta[:, :, i, None] * A)                                 # (B, D, N)
        h = dA * h + delta[:, :, i, None] * Bm[:, None, :, i] * u[:, :, i, None]
        ys.append((h * Cm[:, None, :, i]).sum(-1))                                # (B, D)
    y = torch.stack(ys, dim=-1) + u * Dv[:, None]
    return y * F.silu(z)


class Mixer(nn.Module):
    def __init__(self):
        super().__init__()
        inner = EXPAND * N_EMBD
        self.in_proj = lin(2 * inner, N_EMBD, False)
        self.conv1d = nn.Module()
        self.conv1d.weight, self.conv1d.bias = param(inner, D_CONV), param(inner)
        self.x_proj = lin(DT_RANK + 2 * D_STATE, inner, False)
        self.dt_proj = lin(inner, DT_RANK, True)
        self.A_log = param(inner, D_STATE)
        self.D = param(inner)
        self.out_proj = lin(N_EMBD, inner, False)

    def forward(self, u):
        b, t, _ = u.shape
        inner = EXPAND * N_EMBD
        xz = F.linear(u, self.in_proj.weight).transpose(1, 2)                   # (B, 2D, T)
        x, z = xz[:, :inner], xz[:, inner:]
        x = F.conv1d(x, self.conv1d.weight[:, None, :], self.conv1d.bias,
                     padding=D_CONV - 1, groups=inner)[..., :t]
        x = F.silu(x)                                                            # (B, D, T)
        dbc = F.linear(x.transpose(1, 2), self.x_proj.weight)                   # (B, T, R + 2N)
        dt, Bm, Cm = dbc.split([DT_RANK, D_STATE, D_STATE], dim=-1)
        delta = F.softplus(F.linear(dt, self.dt_proj.weight, self.dt_proj.bias)).transpose(1, 2)
        A = -torch.exp(self.A_log)
        y = selective_scan(x, delta, A, Bm.transpose(1, 2), Cm.transpose(1, 2), self.D, z)
        return F.linear(y.transpose(1, 2), self.out_proj.weight)                # (B, T, C)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.Module()
        self.norm.weight = param(N_EMBD)
        self.mixer = Mixer()

    def forward(self, x):
        return x + self.mixer(rmsnorm(x, self.norm.weight))


class MambaLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Module()
        self.wte.weight = param(PADDED_VOCAB, N_EMBD)
        self.blocks = nn.ModuleList([Block() for _ in range(N_LAYER)])
        self.norm_f = nn.Module()
        self.norm_f.weight = param(N_EMBD)

    def forward(self, ids):
        x = F.embedding(ids, self.wte.weight)
        for block in self.blocks:
            x = block(x)
        return F.linear(rmsnorm(x, self.norm_f.weight), self.wte.weight)[..., :VOCAB]

    def loss(self, ids, targets):
        logits = self.forward(ids)
        return logits, F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))


def is_decayed(name):
    # keel: the matrices of the four projections (not the conv, A_log, D, norms, biases).
    return name.endswith(".weight") and any(
        s in name for s in (".in_proj.", ".x_proj.", ".dt_proj.", ".out_proj."))


def initial_weights(model, rng):
    """f32 initial values per name: Mamba's initialisation, perturbed so every gradient is non-trivial."""
    out = {}
    inner = EXPAND * N_EMBD
    for name, p in model.named_parameters():
        shape = tuple(p.shape)
        if name.endswith("norm.weight") or name == "norm_f.weight":
            w = 1.0 + rng.normal(0.0, 0.1, shape)
        elif name.endswith("A_log"):
            w = np.log(np.tile(np.arange(1, D_STATE + 1, dtype=np.float64), (inner, 1)))
            w = w + rng.normal(0.0, 0.05, shape)
        elif name.endswith(".D"):
            w = 1.0 + rng.normal(0.0, 0.1, shape)
        elif name.endswith("dt_proj.bias"):
            dt = np.exp(rng.uniform(0, 1, shape) * (math.log(DT_MAX) - math.log(DT_MIN))
                        + math.log(DT_MIN))
            dt = np.maximum(dt, DT_FLOOR)
            w = dt + np.log(-np.expm1(-dt))  # softplus^-1(dt)
        elif name.endswith("dt_proj.weight"):
            w = rng.uniform(-1.0, 1.0, shape) * DT_RANK ** -0.5
        elif ".conv1d." in name:
            w = rng.uniform(-1.0, 1.0, shape) / math.sqrt(D_CONV)
        elif name == "wte.weight":
            w = rng.normal(0.0, 0.02, shape)
        else:  # in_proj, x_proj, out_proj: larger than GPT's, so the scan matters
            w = rng.normal(0.0, 0.2, shape)
        out[name] = w.astype(np.float32)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.normpath(
        os.path.join(here, "..", "..", "tests", "golden", "mamba_tiny.h5")))
    args = ap.parse_args()
    run_golden(MambaLM(), initial_weights, is_decayed, args.out, vocab=VOCAB, batch=B, seq=T,
               steps=STEPS, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, max_norm=MAX_NORM,
               seed=SEED,
               int_attrs=[("vocab_size", VOCAB), ("padded_vocab_size", PADDED_VOCAB),
                   ("n_layer", N_LAYER), ("n_embd", N_EMBD), ("d_state", D_STATE),
                   ("d_conv", D_CONV), ("dt_rank", DT_RANK)],
               float_attrs=[("expand", EXPAND)],
               source="scripts/reference/mamba_golden.py")


if __name__ == "__main__":
    main()
