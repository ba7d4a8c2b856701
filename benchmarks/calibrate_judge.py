"""What the shipped judge says about sample sets of known quality: a yardstick for fid_cls, tvd_cls, prdc and KID.

Each set is made from Fashion-MNIST's train split (10k images by default, drawn with a fixed seed)
and scored by ``trainer score`` against the test split, exactly as a user would score samples:

- ``train``: real images (the floor every generator is measured against);
- ``gauss-0.1`` / ``gauss-0.25`` / ``gauss-0.5``: Gaussian pixel noise of that standard deviation on the
  [-1, 1] scale, clipped;
- ``blur-1`` / ``blur-2``: Gaussian blur of that sigma in pixels;
- ``drop-1`` / ``drop-3`` / ``drop-5``: the same number of images drawn from the classes left after
  removing 1, 3 or 5 classes (the last ones: Bag, Ankle boot, …);
- ``one-class``: Trousers only;
- ``noise``: uniform noise (``trainer score --fake noise``).

    python benchmarks/calibrate_judge.py --json benchmarks/studies/calibration.json --markdown

Prints one JSON line per set while it runs, and with ``--markdown`` the table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METRICS = ("fid", "tvd", "is", "precision", "recall", "density", "coverage", "kid")


def degraded_sets(n: int, seed: int, data_dir=None) -> dict[str, np.ndarray | str]:
    """Sets of known quality as float32 arrays ``[n, 1, 28, 28]`` in [-1, 1] (``'noise'`` is scored by name)."""
    import torch
    import torch.nn.functional as F

    from mustangs.data.datasets import load_dataset

    train = load_dataset("fashion-mnist", "train", data_dir=data_dir)
    rng = np.random.default_rng(seed)
    labels = train.labels.numpy()

    def images(idx: np.ndarray) -> np.ndarray:
        return train.data[torch.from_numpy(idx)].to(torch.float32).div(127.5).sub(1.0).numpy()

    def from_classes(classes: list[int]) -> np.ndarray:
        pool = np.flatnonzero(np.isin(labels, classes))
        return images(rng.choice(pool, size=n, replace=len(pool) < n))

    base = images(rng.choice(len(labels), size=n, replace=False))

    def blur(x: np.ndarray, sigma: float) -> np.ndarray:
        r = int(np.ceil(3 * sigma))
        k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
        k = torch.tensor(k / k.sum(), dtype=torch.float32)
        t = F.pad(torch.from_numpy(x), (r, r, r, r), mode="replicate")
        t = F.conv2d(t, k.view(1, 1, 1, -1))
        return F.conv2d(t, k.view(1, 1, -1, 1)).numpy()

    sets: dict[str, np.ndarray | str] = {"train": base}
    for s in (0.1, 0.25, 0.5):
        sets[f"gauss-{s}"] = np.clip(base + rng.normal(0, s, base.shape).astype(np.float32), -1, 1)
    for s in (1, 2):
        sets[f"blur-{s}"] = blur(base, s)
    for k in (1, 3, 5):
        sets[f"drop-{k}"] = from_classes(list(range(10 - k)))
    sets["one-class"] = from_classes([1])
    sets["noise"] = "noise"
    return sets


def score(fake: str, n: int, data_dir=None) -> dict:
    """``trainer score --fake FAKE --json`` on all metrics, as a dict."""
    from trainer.cli import main as trainer_main

    argv = ["score", "--real", "fashion-mnist:test", "--fake", fake, "--samples", str(n), "--json"]
    if data_dir:
        argv += ["--data-dir", str(data_dir)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = trainer_main(argv)
    if rc:
        sys.exit(f"calibrate_judge: trainer score failed on {fake} (exit {rc})")
    return json.loads(out.getvalue())


def markdown(rows: list[dict], n: int) -> str:
    """The calibration table (columns named by protocol, e.g. ``fid_cls10k``)."""
    from mustangs.judge.metrics import protocol_suffix

    columns = [f"{m}_cls{protocol_suffix(n)}" for m in METRICS]
    head = "| set | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns) + "\n"

    def fmt(v) -> str:
        return "–" if v is None else (f"{v:.3f}" if abs(v) < 10 else f"{v:.0f}")

    return head + "".join(f"| {r['set']} | " + " | ".join(fmt(r["scores"].get(c)) for c in columns) + " |\n"
                          for r in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--samples", type=int, default=10_000, help="images per set")
    p.add_argument("--seed", type=int, default=0, help="seed of the drawn images and the pixel noise")
    p.add_argument("--data-dir", default=None, help="folder holding the Fashion-MNIST files")
    p.add_argument("--json", default=None, help="write every set's scores here")
    p.add_argument("--markdown", action="store_true", help="print the table for RESULTS.md at the end")
    args = p.parse_args(argv)
    os.environ.setdefault("MUSTANGS_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)
    rows = []
    t0, c0 = time.time(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in degraded_sets(args.samples, args.seed, args.data_dir).items():
            fake = data
            if not isinstance(data, str):
                fake = str(Path(tmp) / f"{name}.npy")
                np.save(fake, data)
            result = score(fake, args.samples, args.data_dir)
            scores = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            rows.append({"set": name, "scores": scores})
            print(json.dumps(rows[-1]), flush=True)
    record = {"command": "python benchmarks/calibrate_judge.py " + " ".join(argv or sys.argv[1:]),
              "samples": args.samples, "seed": args.seed, "wall_s": round(time.time() - t0, 1),
              "cpu_s": round(time.process_time() - c0, 1), "load": os.getloadavg()[0], "sets": rows}
    if args.json:
        from mustangs.io.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(record, indent=2) + "\n")
    if args.markdown:
        print(markdown(rows, args.samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
