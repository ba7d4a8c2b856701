"""Which classes does a served model draw, and how often? (issue 20: "every class at >= 2%")

Draws ``-n`` samples from an exported ONNX model exactly as ``serving sample`` does (or reads a
``.npy`` of samples), labels each with the project's evaluation classifier (the judge of
``tvd_cls*``) and prints the share of every class, the smallest share and the TVD to uniform.

    python benchmarks/class_shares.py runs/quickstart/ensemble.onnx              # 10,000 samples, seed 1
    python benchmarks/class_shares.py runs/quickstart/samples10k.npy --json shares.json
    python benchmarks/class_shares.py runs/quickstart/ensemble.onnx --min-share 0.02   # exit 1 below it

Exit code 1 when some class's share is below ``--min-share`` (default 0: report only).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_samples(path: Path, n: int, seed: int) -> np.ndarray:
    """Float32 samples in [-1, 1]: read from a .npy, or drawn from an ONNX model by ``serving sample``."""
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "samples.npy"
        serving = Path(sys.executable).with_name("serving")
        subprocess.run([str(serving), "sample", str(path), "-n", str(n), "--seed", str(seed), "--out", str(out)],
                       check=True, stdout=subprocess.DEVNULL)
        return np.load(out, allow_pickle=False)


def class_shares(x: np.ndarray, dataset: str) -> np.ndarray:
    """The fraction of samples the judge assigns to each class (argmax of its logits)."""
    import torch

    from mustangs.judge.classifier_store import load_classifier

    clf = load_classifier(dataset)
    counts = None
    with torch.no_grad():
        for i in range(0, len(x), 1000):
            logits = clf(torch.from_numpy(np.ascontiguousarray(x[i:i + 1000], dtype=np.float32)))
            c = torch.bincount(logits.argmax(1), minlength=logits.shape[1])
            counts = c if counts is None else counts + c
    return (counts.double() / counts.sum()).numpy()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("model", type=Path, help="ensemble.onnx (sampled with serving sample) or a .npy of samples")
    ap.add_argument("-n", type=int, default=10000, help="samples to draw from an ONNX model")
    ap.add_argument("--seed", type=int, default=1, help="sampling seed")
    ap.add_argument("--dataset", default="fashion-mnist", help="whose judge and class names")
    ap.add_argument("--min-share", type=float, default=0.0, help="exit 1 when a class is below this share")
    ap.add_argument("--json", type=Path, default=None, help="also write the shares here")
    a = ap.parse_args(argv)
    if not a.model.is_file():
        print(f"error: {a.model}: no such file", file=sys.stderr)
        return 2
    from mustangs.data.class_names import class_names

    x = load_samples(a.model, a.n, a.seed)
    shares = class_shares(x, a.dataset)
    names = class_names(a.dataset, len(shares))
    tvd = 0.5 * float(np.abs(shares - 1.0 / len(shares)).sum())
    for name, s in zip(names, shares):
        print(f"{name:>12s} {100 * s:5.1f}%")
    low = int(np.argmin(shares))
    print(f"{len(x)} samples; smallest share {100 * shares[low]:.1f}% ({names[low]}); TVD to uniform {tvd:.3f}")
    if a.json:
        a.json.write_text(json.dumps({"model": str(a.model), "n": len(x), "seed": a.seed,
                                      "shares": {n: round(float(s), 4) for n, s in zip(names, shares)},
                                      "min_share": round(float(shares[low]), 4), "tvd_uniform": round(tvd, 4)},
                                     indent=1) + "\n")
    return 1 if shares[low] < a.min_share else 0


if __name__ == "__main__":
    sys.exit(main())
