"""Where classifiers live and the keys of the analytic ones: names and paths only, no torch.

Kept apart from :mod:`mustangs.judge.classifier` so that finding and listing classifiers
(``trainer classifier list``, resolving ``--classifier``) never pays for importing torch.
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent / "assets"

#: Hash that keys caches for the analytic ``rings`` classifier (bump when its definition changes).
RINGS_HASH = "analytic-rings-v1-std0.02"
#: Cache keys of the analytic classifiers of the 2-D toys.
POINT_HASHES = {"rings": RINGS_HASH, "grid25": "analytic-grid25-v1-std0.0125"}


def asset_paths(dataset: str, folder: str | Path | None = None) -> tuple[Path, Path]:
    """Paths of the weights and JSON of the classifier for ``dataset`` (in ``folder`` or the assets)."""
    folder = Path(folder) if folder is not None else ASSETS_DIR
    return folder / f"classifier-{dataset}.safetensors", folder / f"classifier-{dataset}.json"
