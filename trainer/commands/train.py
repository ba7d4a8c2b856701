"""``trainer train CONFIG``: train a grid of GANs by spatial coevolution (Lipizzaner / Mustangs).

Examples::

    trainer train configs/quickstart.yaml --out runs/qs
    trainer train configs/quickstart.yaml --out runs/qs coevolution.generations=40 seed=3
    trainer train configs/quickstart.yaml --dry-run          # print the resolved config and exit
    trainer train configs/quickstart.yaml --out runs/qs --resume   # continue a stopped run
"""

from __future__ import annotations

import shlex
from pathlib import Path


def _intermixed(parser) -> None:
    """Let ``KEY=VALUE`` overrides come before or after options (``CONFIG --out D k=v``)."""
    base = type(parser)

    class Intermixed(base):
        _inside = False

        def parse_known_args(self, args=None, namespace=None):
            if self._inside:
                return super().parse_known_args(args, namespace)
            self._inside = True
            try:
                return self.parse_known_intermixed_args(args, namespace)
            finally:
                self._inside = False

    parser.__class__ = Intermixed


def register(sub) -> None:
    """Add the ``train`` verb to the ``trainer`` CLI."""
    from trainer.cli import HelpFormatter

    p = sub.add_parser("train", help="train a grid of GANs (coevolution) and write a generator pool",
                       description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("config", help="YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted config overrides, e.g. grid.height=3 coevolution.loss=bce")
    p.add_argument("--out", default=None, help="run folder; None means runs/<config name>")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest good checkpoint")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and what would run, then exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    _intermixed(p)


def dry_run_text(cfg, out: Path) -> str:
    """What ``--dry-run`` prints: the resolved config plus the plan (grid, batching, scoring)."""
    from trainer.configio import to_yaml
    from trainer.grid import Grid

    grid = Grid(cfg.grid.height, cfg.grid.width)
    sub = grid.subpopulation_size if cfg.coevolution.exchange else 1
    lines = [to_yaml(cfg).rstrip(), "",
             f"# plan: {grid.size} cells on a {grid.height}x{grid.width} torus, sub-population {sub}, "
             f"{cfg.coevolution.generations} generations, loss={cfg.coevolution.loss}, "
             f"selection={cfg.coevolution.selection}, exchange={cfg.coevolution.exchange}",
             f"# output: {out}"]
    lines.append(f"# scoring: {_scoring_plan(cfg.data.dataset)}")
    return "\n".join(lines)


def _scoring_plan(dataset: str) -> str:
    from trainer.errors import UserError

    try:
        from trainer.classifier import read_classifier_info

        if dataset != "rings":
            read_classifier_info(dataset)
    except UserError as exc:
        return (f"no evaluation classifier for {dataset} ({exc}); the run will train without fid_cls scores "
                f"and keep uniform mixture weights")
    except ImportError:
        return "evaluation classifier module missing; no fid_cls scores"
    return f"fid_cls on the {dataset} evaluation classifier; mixture (1+1)-ES per cell"


def run(args) -> int:
    """Run ``trainer train``."""
    from trainer.config import load_train_config
    from trainer.run import train

    cfg = load_train_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    if args.dry_run:
        print(dry_run_text(cfg, out))
        return 0
    try:
        again = " ".join(shlex.quote(a) for a in [args.config, *args.overrides])  # for the resume hint
        train(cfg, out, resume=args.resume, progress=False if args.quiet else None, config_path=again)
    except KeyboardInterrupt:
        return 130
    return 0

