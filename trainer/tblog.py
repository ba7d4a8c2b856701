"""TensorBoard event files for a training run (``<run>/tensorboard/``), when ``tensorboard`` is installed.

``tensorboard --logdir runs`` then shows, per generation: every cell's losses, learning rates,
fitness, Mustangs loss choice and scores (``cell/r0c1/fid_cls1k`` …), the mixture scores, the
best generator and mixture of the grid (``best/…``), how many generators drew each loss, and
the sample grid; at the end the final pool scores (``final/…``). ``metrics.jsonl`` and
``report.html`` stay the primary record; these files are a view of the same numbers.

Writes go through :class:`torch.utils.tensorboard.SummaryWriter`; on ``--resume`` it is opened
with ``purge_step`` so TensorBoard hides events after the checkpoint being resumed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

import torch

#: Sub-folder of the run that receives the event files.
SUBDIR = "tensorboard"

#: Index of each Mustangs generator loss in the ``loss_choice`` scalar.
LOSS_INDEX = {"bce": 0, "mse": 1, "heuristic": 2}


def installed() -> bool:
    """Whether the ``tensorboard`` package (needed by ``SummaryWriter``) is importable."""
    return importlib.util.find_spec("tensorboard") is not None


def _cell(rec: dict) -> str:
    r, c = rec["cell"]
    return f"cell/r{r}c{c}"


class RunBoard:
    """One run's TensorBoard writer; every method is a no-op after :meth:`close`."""

    def __init__(self, run_dir: str | Path, resume_from: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(run_dir) / SUBDIR
        kwargs = {"purge_step": resume_from + 1} if resume_from else {}
        self.writer = SummaryWriter(log_dir=str(self.dir), **kwargs)

    @classmethod
    def open(cls, run_dir: str | Path, setting: bool | None, resume_from: int | None = None,
             log: Callable[[str], None] = print) -> "RunBoard | None":
        """A writer when ``output.tensorboard`` allows it (None: when installed), else None."""
        if setting is False or (setting is None and not installed()):
            return None
        board = cls(run_dir, resume_from)
        log(f"tensorboard: event files in {board.dir} (tensorboard --logdir {Path(run_dir).parent})")
        return board

    def generation(self, gen: int, records: list[dict], best: dict) -> None:
        """Scalars of one generation from its ``metrics.jsonl`` records."""
        w = self.writer
        choices: dict[str, int] = {}
        for rec in records:
            tag = _cell(rec)
            for key in ("loss_g", "loss_d", "fitness_g", "fitness_d", "lr_g", "lr_d"):
                if key in rec:
                    w.add_scalar(f"{tag}/{key}", float(rec[key]), gen)
            if rec.get("staleness"):   # async exchange: the oldest neighbour copy this cell trained against
                w.add_scalar(f"{tag}/staleness_max", max(rec["staleness"]), gen)
            choice = rec.get("loss_choice")
            if choice in LOSS_INDEX:
                w.add_scalar(f"{tag}/loss_choice", LOSS_INDEX[choice], gen)
                choices[choice] = choices.get(choice, 0) + 1
            for key, value in rec.get("scores", {}).items():
                w.add_scalar(f"{tag}/{key}", float(value), gen)
            for key, value in rec.get("mixture_scores", {}).items():
                w.add_scalar(f"{tag}/mixture_{key}", float(value), gen)
        for loss in LOSS_INDEX:
            if choices:
                w.add_scalar(f"loss_choices/{loss}", choices.get(loss, 0), gen)
        for kind, entry in best.items():
            for key, value in entry.items():
                if key != "cell":
                    w.add_scalar(f"best/{kind}_{key}", float(value), gen)

    def lineages(self, gen: int, summary: dict) -> None:
        """Distinct founder lineages among the centres and their genome distance (``lineages/…``)."""
        for key, value in summary.items():
            self.writer.add_scalar(f"lineages/{key}", float(value), gen)

    def samples(self, gen: int, x: torch.Tensor, nrow: int) -> None:
        """The sample grid (images in [-1, 1], one row per cell); point samples are skipped."""
        if x.dim() != 4:
            return
        from torchvision.utils import make_grid

        grid = make_grid(x.float().clamp(-1, 1), nrow=nrow, normalize=True, value_range=(-1, 1), pad_value=1.0)
        self.writer.add_image("samples", grid, gen)

    def final(self, gen: int, ids: list[str], gen_scores: list[dict], mix_scores: list[dict]) -> None:
        """The final pool scores of every cell's generator and mixture."""
        for gid, gs, ms in zip(ids, gen_scores, mix_scores):
            for key, value in gs.items():
                self.writer.add_scalar(f"final/{gid}/{key}", float(value), gen)
            for key, value in ms.items():
                self.writer.add_scalar(f"final/{gid}/mixture_{key}", float(value), gen)

    def flush(self) -> None:
        """Write pending events to disk."""
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


__all__ = ["RunBoard", "installed", "SUBDIR", "LOSS_INDEX"]
