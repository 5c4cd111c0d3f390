"""What every family's golden script shares (gpt_golden.py, hyena_golden.py,
mamba_golden.py): start the float64 model from f32 initial weights, one
forward and backward on a random batch, a clipped AdamW trajectory the way
keel runs it, and the HDF5 file the C++ golden tests read
(tests/testing/golden.h). Deterministic: the same bytes on every run.

The optimizer is torch.optim.AdamW (constant lr, weight decay on the names
`is_decayed` picks), after clipping the gradients to global norm max_norm as
keel does (trainer::clip_coefficient: scale max_norm / (norm + 1e-6) when
norm > max_norm).
"""

import math
import os

import h5py
import numpy as np
import torch


def run_golden(model, initial_weights, is_decayed, out, *, vocab, batch, seq, steps, lr, betas,
               eps, weight_decay, max_norm, seed, int_attrs, float_attrs, source):
    """model.loss(ids, targets) -> (logits, loss); initial_weights(model, rng) -> {name: f32}."""
    torch.set_num_threads(1)  # fixed reduction order: identical bytes on every run
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(seed)

    init = initial_weights(model, rng)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.from_numpy(init[name].astype(np.float64)))
    seq_ids = rng.integers(0, vocab, size=(batch, seq + 1), dtype=np.int64)
    ids = torch.from_numpy(seq_ids[:, :seq].copy())
    targets = torch.from_numpy(seq_ids[:, 1:].copy())

    logits, loss = model.loss(ids, targets)
    loss.backward()
    ref_logits = logits.detach().numpy().copy()
    ref_loss = loss.item()
    grads = {n: p.grad.detach().numpy().copy() for n, p in model.named_parameters()}

    params = list(model.named_parameters())
    opt = torch.optim.AdamW(
        [{"params": [p for n, p in params if is_decayed(n)], "weight_decay": weight_decay},
         {"params": [p for n, p in params if not is_decayed(n)], "weight_decay": 0.0}],
        lr=lr, betas=betas, eps=eps)
    losses, norms = [], []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        _, loss = model.loss(ids, targets)
        loss.backward()
        norm = math.sqrt(sum(float((p.grad * p.grad).sum()) for _, p in params))
        # keel's clip_coefficient; stay clear of its boundary so torch's clamp
        # form (min(1, max_norm / (norm + 1e-6))) would give the same factor.
        assert abs(norm - max_norm) > 1e-3, norm
        coef = 1.0 if norm <= max_norm else max_norm / (norm + 1e-6)
        with torch.no_grad():
            for _, p in params:
                p.grad.mul_(coef)
        opt.step()
        losses.append(loss.item())
        norms.append(norm)
    final = {n: p.detach().numpy().copy() for n, p in params}

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with h5py.File(out, "w", libver="earliest", track_order=False) as f:
        for k, v in int_attrs + [("steps", steps), ("seed", seed)]:
            f.attrs[k] = np.int64(v)
        for k, v in [("lr", lr), ("beta1", betas[0]), ("beta2", betas[1]), ("eps", eps),
                     ("weight_decay", weight_decay), ("max_norm", max_norm)] + float_attrs:
            f.attrs[k] = np.float64(v)
        f.attrs["source"] = "%s (torch %s, float64)" % (source, torch.__version__)
        for n, _ in params:
            f.create_dataset("init/" + n, data=init[n], track_times=False)
        f.create_dataset("batch/ids", data=ids.numpy(), track_times=False)
        f.create_dataset("batch/targets", data=targets.numpy(), track_times=False)
        f.create_dataset("ref/logits", data=ref_logits, track_times=False)
        f.create_dataset("ref/loss", data=np.float64(ref_loss), track_times=False)
        for n, _ in params:
            f.create_dataset("ref/grad/" + n, data=grads[n], track_times=False)
        f.create_dataset("ref/losses", data=np.array(losses), track_times=False)
        f.create_dataset("ref/grad_norms", data=np.array(norms), track_times=False)
        for n, _ in params:
            f.create_dataset("ref/final/" + n, data=final[n], track_times=False)
    print("wrote %s: loss %.6f, losses %s, grad norms %s" % (
        out, ref_loss, " ".join("%.4f" % l for l in losses), " ".join("%.3f" % g for g in norms)))
