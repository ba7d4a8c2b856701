"""A plain single GAN, written without the trainer, against our 1×1 grid at equal Adam steps (issue 20, item 2).

``plain``: the textbook loop in plain PyTorch — one ``torch.optim.Adam`` per network (lr 2e-4,
betas (0.5, 0.999)), non-saturating BCE, a D step then a G step on each mini-batch of 64 images
drawn at random from the whole Fashion-MNIST train split. For ``dcgan28`` the published DCGAN
initialisation (conv/linear weights N(0, 0.02), BatchNorm weights N(1, 0.02), biases 0); for
``mlp`` (the reference Lipizzaner MLP) PyTorch's default initialisation, as the reference does.
Only the network classes are shared with Mustangs (``mustangs.pool.networks``).

``ours``: ``trainer train`` with the same recipe as a 1×1 grid (the mode study's single-GAN
variant: no selection, no exchange, no mixture; BCE; batch 64; the whole train split), its
learning-rate mutation on as in every config. ``ours-nomut``: the same with
``mutation_probability=0``, to tell the mutation's effect apart; ``plain-torchinit``: the plain loop
with PyTorch's default initialisation (the trainer's default), to tell the initialisation's effect
apart; ``ours-dcganinit``: ``ours`` with ``network.init=dcgan`` (the trainer's DCGAN initialisation, which
``network.init=auto``, the default, picks for dcgan28; ``ours`` and ``ours-nomut`` pin ``torch``).
``--ours-overrides key=value ...`` adds trainer overrides to every ``ours*`` run (its run folder
name gains a short hash of them, so runs with other overrides are never reused).

Every generator draws 10,000 samples (eval mode, seeded latents) that ``trainer score`` judges
against the test split — the same judge and protocol as the calibration table in RESULTS.md.

    python benchmarks/baseline_gan.py --arch mlp --steps 3000 --seeds 0 1 2 --json benchmarks/studies/baseline-mlp.json
    python benchmarks/baseline_gan.py --arch dcgan28 --steps 1000 --seeds 0 1 2 --json benchmarks/studies/baseline-dcgan28.json
    python benchmarks/baseline_gan.py --arch dcgan28 --steps 1000 --seeds 0 1 2 --impls ours-dcganinit --json benchmarks/studies/baseline-dcgan28-dcganinit.json
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

LATENT = 64
METRICS = ("fid_cls10k", "tvd_cls10k", "precision_cls10k", "recall_cls10k", "coverage_cls10k")


def cpu_seconds() -> float:
    """CPU-seconds of this process so far (user + system, all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def dcgan_init(module) -> None:
    """The DCGAN paper's initialisation (Radford et al. 2016), as in PyTorch's DCGAN example."""
    from torch import nn

    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def train_plain(arch: str, steps: int, seed: int, batch_size: int, data_dir=None, dcgan_weights: bool = True,
                on_step=None, at=()):
    """The textbook GAN loop; returns the trained generator (eval mode). ``dcgan_weights=False`` keeps
    PyTorch's default initialisation for the DCGAN too (as the trainer does), to tell its effect apart.
    ``on_step(step, G)`` is called after each step listed in ``at`` (G in eval mode; put back into
    train mode after), so a caller can judge the generator along the way (time_to_quality.py)."""
    import torch
    import torch.nn.functional as F

    from mustangs.data.datasets import load_dataset
    from mustangs.pool.networks import NetSpec, build_discriminator, build_generator

    torch.manual_seed(seed)
    spec = NetSpec(arch, LATENT, (1, 28, 28))
    G, D = build_generator(spec), build_discriminator(spec)
    if arch == "dcgan28" and dcgan_weights:
        G.apply(dcgan_init)
        D.apply(dcgan_init)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    data = load_dataset("fashion-mnist", "train", data_dir=data_dir).data
    g = torch.Generator().manual_seed(seed)
    ones, zeros = torch.ones(batch_size), torch.zeros(batch_size)
    at = set(at)
    for step in range(steps):
        real = data[torch.randint(len(data), (batch_size,), generator=g)].to(torch.float32).div(127.5).sub(1.0)
        fake = G(torch.randn(batch_size, LATENT, generator=g))
        # Discriminator step: real → 1, fake → 0.
        loss_d = F.binary_cross_entropy(D(real), ones) + F.binary_cross_entropy(D(fake.detach()), zeros)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # Generator step: non-saturating, −log D(G(z)).
        loss_g = F.binary_cross_entropy(D(fake), ones)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if on_step is not None and step + 1 in at:
            on_step(step + 1, G.eval())
            G.train()
    return G.eval()


#: The trainer overrides each ``ours*`` implementation adds to the shared 1×1 recipe.
#: ``ours`` and ``ours-nomut`` keep PyTorch's default initialisation, as when their rows were recorded
#: (before ``network.init=auto`` became the default).
OURS_IMPLS = {"ours": ["network.init=torch"],
              "ours-nomut": ["network.init=torch", "coevolution.mutation_probability=0"],
              "ours-dcganinit": ["network.init=dcgan"]}


def train_ours(arch: str, steps: int, seed: int, batch_size: int, out: Path, extra: list[str] = (), data_dir=None):
    """``trainer train`` as a 1×1 grid with the same recipe plus the overrides ``extra`` (applied
    last, so they win); returns the pool's generator."""
    from mustangs.pool.format import read_pool
    from trainer.cli import main as trainer_main

    per_generation = 100
    overrides = [
        f"seed={seed}", "threads=1", "grid.height=1", "grid.width=1", f"network.arch={arch}",
        f"network.latent_dim={LATENT}", "data.sampling_ratio=1.0", f"data.batch_size={batch_size}",
        f"coevolution.generations={max(1, steps // per_generation)}",
        f"coevolution.batches_per_generation={min(steps, per_generation)}", "coevolution.loss=bce",
        "coevolution.selection=false", "coevolution.exchange=false", "coevolution.lr_g=0.0002",
        "coevolution.lr_d=0.0002", "mixture.enabled=false", "eval.every=null", "eval.fid_samples=1000",
        "eval.diversity_samples=null", "output.report=false", "output.sample_every=null",
        "output.checkpoint_every=1000", "output.tensorboard=false",
    ] + list(extra)
    if data_dir:
        overrides.append(f"data.data_dir={data_dir}")
    if not (out / "pool" / "manifest.json").is_file():
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            rc = trainer_main(["train", "configs/quickstart.yaml", "--out", str(out), "--quiet", *overrides])
        if rc:
            sys.exit(f"baseline_gan: trainer train failed (exit {rc}); rerun it by hand: trainer train "
                     f"configs/quickstart.yaml --out {out} {' '.join(overrides)}")
    return read_pool(out / "pool").load_generator(0).eval()


def judge(G, seed: int, tmp: Path, data_dir=None) -> dict:
    """``trainer score`` on 10,000 samples of ``G`` (seeded latents)."""
    import torch

    from trainer.cli import main as trainer_main

    g = torch.Generator().manual_seed(10_000 + seed)
    with torch.no_grad():
        x = torch.cat([G(torch.randn(1000, LATENT, generator=g)) for _ in range(10)])
    path = tmp / f"samples-{seed}.npy"
    np.save(path, x.numpy())
    argv = ["score", "--real", "fashion-mnist:test", "--fake", str(path), "--samples", "10000",
            "--metrics", "fid,tvd,prdc", "--json"] + (["--data-dir", str(data_dir)] if data_dir else [])
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        if trainer_main(argv):
            sys.exit("baseline_gan: trainer score failed")
    return {k: v for k, v in json.loads(buf.getvalue()).items() if k in METRICS}


def summary(records: list[dict]) -> str:
    """A markdown table: mean ± std over seeds per implementation."""
    lines = ["| implementation | seeds | " + " | ".join(METRICS) + " | CPU-s per run |",
             "|---|---:|" + "---:|" * (len(METRICS) + 1)]
    for impl in dict.fromkeys(r["impl"] for r in records):
        rs = [r for r in records if r["impl"] == impl]

        def cell(key, rs=rs):
            vals = [r["scores"][key] if key in r["scores"] else r[key] for r in rs]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            return f"{statistics.mean(vals):.3g} ± {sd:.2g}"

        lines.append(f"| {impl} | {len(rs)} | " + " | ".join(cell(k) for k in METRICS) + f" | {cell('cpu_s')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=("mlp", "dcgan28"), default="mlp")
    p.add_argument("--steps", type=int, default=3000, help="Adam steps per network")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--impls", nargs="+", default=["plain", "ours", "ours-nomut"],
                   choices=["plain", "plain-torchinit", *OURS_IMPLS])
    p.add_argument("--ours-overrides", nargs="+", default=[], metavar="KEY=VALUE",
                   help="extra trainer overrides for every ours* run, e.g. network.init=dcgan")
    p.add_argument("--runs", default="runs/baseline", help="folder for the trainer's run folders")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", default=None, help="write the records here (atomic)")
    args = p.parse_args(argv)
    os.environ.setdefault("MUSTANGS_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for impl in args.impls:
                c0 = cpu_seconds()
                if impl.startswith("plain"):
                    G = train_plain(args.arch, args.steps, seed, args.batch_size, args.data_dir, impl == "plain")
                else:
                    extra = OURS_IMPLS[impl] + args.ours_overrides
                    tag = f"-{hashlib.sha256(' '.join(args.ours_overrides).encode()).hexdigest()[:8]}" \
                        if args.ours_overrides else ""
                    run = Path(args.runs) / f"{args.arch}-{args.steps}-{impl}{tag}-s{seed}"
                    G = train_ours(args.arch, args.steps, seed, args.batch_size, run, extra, args.data_dir)
                train_s = cpu_seconds() - c0
                records.append({"impl": impl, "seed": seed, "arch": args.arch, "steps": args.steps,
                                **({"overrides": args.ours_overrides} if args.ours_overrides
                                   and not impl.startswith("plain") else {}),
                                "cpu_s": round(train_s, 1), "scores": judge(G, seed, Path(tmp), args.data_dir),
                                "load": round(os.getloadavg()[0], 1)})
                print(json.dumps(records[-1]), flush=True)
    print(summary(records))
    if args.json:
        from mustangs.io.atomic import write_text_atomic

        doc = {"command": "python benchmarks/baseline_gan.py " + " ".join(argv or sys.argv[1:]), "records": records}
        write_text_atomic(args.json, json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
