#!/usr/bin/env python3
"""Plots an MQAR grid's results as Zoology's figure does: validation
accuracy against d_model, one line per family, one panel per (seq_len,
kv pairs) setting.

    scripts/mqar_plot.py DIR [--out DIR/mqar.png]

DIR is the --out of `keel mqar --grid ...`; its results.jsonl holds one JSON
object per cell (config::MqarCellResult). Needs matplotlib
(python3-matplotlib, which scripts/setup.sh installs).
"""
import argparse
import json
import os
import sys


def load(path):
    cells = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                cells.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit(f"mqar_plot: {path}:{n}: not JSON ({e})")
    if not cells:
        sys.exit(f"mqar_plot: {path} holds no cells")
    for c in cells:
        for k in ("family", "d_model", "seq_len", "num_kv_pairs", "best_accuracy"):
            if k not in c:
                sys.exit(f"mqar_plot: {path}: a cell has no '{k}'")
    return cells


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="the grid's --out directory")
    ap.add_argument("--out", help="PNG path (default DIR/mqar.png)")
    a = ap.parse_args()
    cells = load(os.path.join(a.dir, "results.jsonl"))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("mqar_plot: matplotlib is missing (apt-get install python3-matplotlib)")

    settings = sorted({(int(c["seq_len"]), int(c["num_kv_pairs"])) for c in cells})
    families = list(dict.fromkeys(c["family"] for c in cells))
    widths = sorted({int(c["d_model"]) for c in cells})
    fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 3.6),
                             sharey=True, squeeze=False)
    for ax, (T, kv) in zip(axes[0], settings):
        for fam in families:
            pts = sorted((int(c["d_model"]), float(c["best_accuracy"])) for c in cells
                         if c["family"] == fam and int(c["seq_len"]) == T
                         and int(c["num_kv_pairs"]) == kv)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=fam)
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths)
        ax.set_xticklabels([str(w) for w in widths])
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"seq_len {T}, {kv} kv pairs")
        ax.set_xlabel("d_model")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("MQAR accuracy (best lr)")
    axes[0][-1].legend(loc="lower right")
    fig.tight_layout()
    out = a.out or os.path.join(a.dir, "mqar.png")
    fig.savefig(out, dpi=110)
    print(f"mqar_plot: wrote {out}")


if __name__ == "__main__":
    main()
