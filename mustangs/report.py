"""``report.html`` of a run (written by ``trainer train``, extended by ``ensembler optimize --report``): grid heatmaps of per-cell fid_cls (like the grid tables of the
Lipizzaner papers), loss and learning-rate curves, Mustangs loss-choice counts, sample grids,
and the ensemble chosen by ``ensembler optimize`` when there is one.

So that a reader can tell whether a number is good, every fid/tvd is shown beside its
references on the same protocol (real images and uniform noise, stored in the pool manifest by
the trainer and in ``ensemble.json`` by ``ensembler optimize --report``), and the ensemble
section lists every candidate's objectives side by side.

Everything is read back from the run folder (``metrics.jsonl``, ``pool/manifest.json``,
``samples/``, ``ensemble.json``), so a report can be rebuilt at any time with :func:`write_report`.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from mustangs.io.atomic import atomic_path, write_text_atomic
from mustangs.names import G_LOSSES, count


def read_metrics(run: str | Path) -> list[dict]:
    """The per-generation records of ``run/metrics.jsonl`` (a torn last line is ignored)."""
    out = []
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            break
    return out


def fid_key(records: list[dict], field: str = "scores") -> str | None:
    """The protocol name of the per-generation fid (e.g. ``fid_cls1k``), if any cell was scored."""
    for rec in records:
        for cell in rec["cells"]:
            for k in cell.get(field, {}):
                if k.startswith("fid_"):
                    return k
    return None


def fid_grid(rec: dict, key: str, shape: tuple[int, int], field: str = "scores") -> np.ndarray:
    """``[H, W]`` array of one generation's per-cell fid (NaN where not scored)."""
    out = np.full(shape, np.nan)
    for cell in rec["cells"]:
        v = cell.get(field, {}).get(key)
        if v is not None:
            out[cell["cell"][0], cell["cell"][1]] = v
    return out


def _chosen(scored: list[dict], k: int = 4) -> list[dict]:
    if len(scored) <= k:
        return scored
    idx = sorted(set(np.linspace(0, len(scored) - 1, k).round().astype(int).tolist()))
    return [scored[i] for i in idx]


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)


#: How much larger than their pixels sample grids are drawn (crisp, no smoothing).
ZOOM = 3


def _img(src: str, path: Path, zoom: int = ZOOM, alt: str = "") -> str:
    """An ``<img>`` of a pixel grid drawn ``zoom`` times its size, without blurring."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            width = im.size[0] * zoom
    except (OSError, ValueError):
        width = 600
    return (f"<img src='{html.escape(src)}' width={width} alt='{html.escape(alt)}' "
            "style='image-rendering:pixelated;image-rendering:crisp-edges;max-width:100%'>")


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) and np.isfinite(v) else "–"


def reference_note(refs: dict, keys) -> str:
    """``fid_cls1k: real images 2.1, uniform noise 1907`` for the keys that have references."""
    parts = [f"{k}: real images {_fmt(refs[k]['real'])}, uniform noise {_fmt(refs[k]['noise'])}"
             for k in keys if k in refs]
    return ("<p><i>References on the same protocol (lower fid/tvd is better): " + "; ".join(parts)
            + ".</i></p>") if parts else ""


def _table(rows: list[dict], keys: list[str], refs: dict, first: str = "") -> str:
    """An HTML table of ``rows`` (name + metrics), with reference rows for real images and noise."""
    out = [f"<table border=1 cellpadding=4><tr><th>{html.escape(first)}</th>"
           + "".join(f"<th>{html.escape(k)}</th>" for k in keys) + "</tr>"]
    for r in rows:
        style = " style='font-weight:bold'" if r.get("bold") else ""
        out.append(f"<tr{style}><td>{html.escape(str(r['name']))}</td>"
                   + "".join(f"<td>{_fmt(r.get(k))}</td>" for k in keys) + "</tr>")
    for which, label in (("real", "reference: real images"), ("noise", "reference: uniform noise")):
        if any(k in refs for k in keys):
            out.append(f"<tr style='color:#666'><td><i>{label}</i></td>"
                       + "".join(f"<td><i>{_fmt(refs.get(k, {}).get(which))}</i></td>" for k in keys) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _series(records: list[dict], field: str) -> tuple[list[int], dict[str, list[float]]]:
    gens = [r["generation"] for r in records]
    per: dict[str, list[float]] = {}
    for r in records:
        for c in r["cells"]:
            per.setdefault(f"({c['cell'][0]},{c['cell'][1]})", []).append(c.get(field, np.nan))
    return gens, per


def write_report(run: str | Path, ensemble: str | Path | None = None) -> Path:
    """Write ``run/report.html`` and its PNGs in ``run/report/``; returns the HTML path.

    ``ensemble``: an ``ensemble.json`` to show (default: ``run/ensemble.json`` when it exists).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run)
    figdir = run / "report"
    figdir.mkdir(parents=True, exist_ok=True)
    records = read_metrics(run)
    manifest = {}
    if (run / "pool" / "manifest.json").is_file():
        manifest = json.loads((run / "pool" / "manifest.json").read_text())
    refs = manifest.get("references") or {}
    cells = [tuple(c["cell"]) for c in records[0]["cells"]] if records else []
    shape = (max(r for r, _ in cells) + 1, max(c for _, c in cells) + 1) if cells else (1, 1)
    parts = [f"<h1>Mustangs run {html.escape(run.name)}</h1>",
             f"<p>{len(records)} generations, {len(cells)} cells on a {shape[0]}x{shape[1]} torus.</p>"]

    summary = manifest.get("summary") or {}
    if any(summary.values()):
        rows = [{"name": f"{kind.replace('_', ' ')} ({s['id']})", **s}
                for kind in ("best_generator", "best_mixture") if (s := summary.get(kind))]
        keys = [k for k in rows[0] if k not in ("name", "id")]
        parts.append("<h2>Final scores (pool)</h2>" + _table(rows, keys, refs))

    ens_path = Path(ensemble) if ensemble is not None else run / "ensemble.json"
    if ens_path.is_file():
        parts.append(ensemble_section(ens_path, figdir, plt))

    # heatmaps of per-cell fid for chosen generations
    key = fid_key(records)
    if key:
        scored = [r for r in records if any(key in c.get("scores", {}) for c in r["cells"])]
        chosen = _chosen(scored)
        grids = [fid_grid(r, key, shape) for r in chosen]
        vmin, vmax = np.nanmin(grids), np.nanmax(grids)
        fig, axes = plt.subplots(1, len(chosen), figsize=(3.2 * len(chosen), 3.2), squeeze=False)
        for ax, r, g in zip(axes[0], chosen, grids):
            im = ax.imshow(g, cmap="viridis_r", vmin=vmin, vmax=vmax)
            for (i, j), v in np.ndenumerate(g):
                dark = (v - vmin) > 0.4 * (vmax - vmin) if vmax > vmin else True
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", color="w" if dark else "k", fontsize=9)
            ax.set_title(f"generation {r['generation']}")
            ax.set_xticks(range(shape[1]))
            ax.set_yticks(range(shape[0]))
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label=key)
        _save(fig, figdir / "heatmap.png")
        tkey = key.replace("fid_", "tvd_")
        parts.append(f"<h2>Per-cell {key} of the centre generators</h2><img src='report/heatmap.png'>"
                     + reference_note(refs, (key, tkey)))
        last = scored[-1]
        g = fid_grid(last, key, shape)
        m = fid_grid(last, key, shape, "mixture_scores")
        parts.append(f"<p>Generation {last['generation']}: generator / neighbourhood mixture {key}</p>"
                     "<table border=1 cellpadding=4>")
        for i in range(shape[0]):
            parts.append("<tr>" + "".join(f"<td>{g[i, j]:.2f} / {m[i, j]:.2f}</td>" for j in range(shape[1]))
                         + "</tr>")
        parts.append("</table>")
        gens = [r["generation"] for r in scored]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for c in cells:
            ax.plot(gens, [next((x.get("scores", {}).get(key, np.nan) for x in r["cells"]
                                 if tuple(x["cell"]) == c), np.nan) for r in scored], lw=0.8, alpha=0.6,
                    label=f"cell {c}")
        best_mix = [min((x.get("mixture_scores", {}).get(key, np.inf) for x in r["cells"]), default=np.nan)
                    for r in scored]
        ax.plot(gens, best_mix, "k-", lw=2, label="best mixture")
        if key in refs:
            ax.axhline(refs[key]["noise"], color="tab:red", ls="--", lw=1, label="uniform noise")
            ax.axhline(max(refs[key]["real"], 1e-3), color="tab:green", ls="--", lw=1, label="real images")
        ax.set_xlabel("generation")
        ax.set_ylabel(key)
        ax.set_yscale("log")
        ax.legend(fontsize=7, ncol=2)
        _save(fig, figdir / "fid.png")
        parts.append(f"<h2>{key} over generations</h2><img src='report/fid.png'>")
    else:
        parts.append("<p>No fid_cls scores (no evaluation classifier for this dataset).</p>")

    # loss and lr curves
    if records:
        fig, axes = plt.subplots(2, 2, figsize=(11, 6))
        for ax, field in zip(axes.flat, ("loss_g", "loss_d", "lr_g", "lr_d")):
            gens, per = _series(records, field)
            for name, vals in per.items():
                ax.plot(gens, vals, lw=0.9, label=name)
            ax.set_title(field)
            ax.set_xlabel("generation")
        axes[0, 0].legend(fontsize=7, ncol=2)
        fig.tight_layout()
        _save(fig, figdir / "curves.png")
        parts.append("<h2>Losses and learning rates per cell</h2><img src='report/curves.png'>")

        counts = np.zeros((len(records), len(G_LOSSES)))
        for i, r in enumerate(records):
            for c in r["cells"]:
                if c["loss_choice"] in G_LOSSES:   # wgan / wgan-gp runs draw no generator loss
                    counts[i, G_LOSSES.index(c["loss_choice"])] += 1
        fig, ax = plt.subplots(figsize=(7, 3))
        bottom = np.zeros(len(records))
        gens = [r["generation"] for r in records]
        for j, name in enumerate(G_LOSSES):
            ax.bar(gens, counts[:, j], bottom=bottom, label=f"{name} ({int(counts[:, j].sum())})")
            bottom += counts[:, j]
        ax.set_xlabel("generation")
        ax.set_ylabel("generators")
        ax.legend(fontsize=8)
        _save(fig, figdir / "loss_choice.png")
        parts.append("<h2>Generator loss choices</h2><img src='report/loss_choice.png'>")

    lin = [r for r in records if "lineages" in r]
    if lin:
        parts.append(lineage_section(lin, cells, figdir, plt))

    samples = sorted((run / "samples").glob("gen-*.png"))
    if samples:
        parts.append("<h2>Samples (one row per cell, the same latents every generation)</h2>")
        for p in dict.fromkeys([samples[0], samples[len(samples) // 2], samples[-1]]):
            parts.append(f"<figure style='display:inline-block'>{_img(f'samples/{p.name}', p, alt=p.stem)}"
                         f"<figcaption>{p.stem}</figcaption></figure>")
    doc = ("<!doctype html><html><head><meta charset='utf-8'><title>Mustangs run "
           f"{html.escape(run.name)}</title></head><body style='font-family:sans-serif'>"
           + "\n".join(parts) + "</body></html>")
    write_text_atomic(run / "report.html", doc)
    return run / "report.html"


def lineage_section(records: list[dict], cells: list[tuple], figdir: Path, plt) -> str:
    """Lineages over generations: each cell's founder lineage as a colour (rows: cells, columns:
    generations) beside the number of distinct lineages and the centres' genome distance."""
    gens = [r["generation"] for r in records]
    index = {c: i for i, c in enumerate(cells)}
    colour = np.zeros((len(cells), len(records)))
    for j, r in enumerate(records):
        for c in r["cells"]:
            if "lineage_g" in c:
                colour[index[tuple(c["cell"])], j] = index.get(tuple(c["lineage_g"]), 0)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5))
    a.imshow(colour, aspect="auto", cmap="tab20", interpolation="nearest", vmin=0, vmax=max(19, len(cells) - 1),
             extent=(gens[0] - 0.5, gens[-1] + 0.5, len(cells) - 0.5, -0.5))
    a.set_xlabel("generation")
    a.set_ylabel("cell")
    a.set_title("founder lineage of each centre generator")
    b.plot(gens, [r["lineages"]["distinct_g"] for r in records], "k-", label="distinct lineages (G)")
    b.set_xlabel("generation")
    b.set_ylabel("lineages")
    b.set_ylim(0, len(cells) + 0.5)
    b2 = b.twinx()
    b2.plot(gens, [r["lineages"]["genome_distance_g"] for r in records], "tab:blue", ls="--",
            label="genome distance (G)")
    b2.set_ylabel("mean pairwise L2 / mean norm")
    b.legend(loc="lower left", fontsize=8)
    b2.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    _save(fig, figdir / "lineages.png")
    last = records[-1]["lineages"]
    return (f"<h2>Lineages</h2><p>At the end {last['distinct_g']} of {last['cells']} founders have descendants "
            f"among the centre generators; genome distance {last['genome_distance_g']:.3g}.</p>"
            "<img src='report/lineages.png'>")


#: Name of the ensemble's sample grid in ``run/report/`` (written by ``ensembler optimize --report``).
ENSEMBLE_GRID = "ensemble_samples.png"


def ensemble_section(path: Path, figdir: Path, plt) -> str:
    """The ensemble chosen by ``ensembler optimize``: weights, every candidate's objectives side by
    side (with a fid-vs-tvd plot of the trade-off), verified metrics, references, samples."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return f"<h2>Ensemble</h2><p>{html.escape(str(path))} could not be read ({html.escape(str(exc))}).</p>"
    metrics = data.get("metrics") or {}
    refs = data.get("references") or {}
    parts = [f"<h2>Ensemble ({html.escape(path.name)})</h2>",
             f"<p>{html.escape(str(data.get('method', '?')))} over {count(len(data.get('pool_weights') or {}), 'generator')} "
             f"minimising <b>{html.escape(str(data.get('objective_minimised', data.get('objective', '?'))))}</b> "
             f"(target {html.escape(str(data.get('target', 'uniform')))}); "
             f"{count(len(data.get('members') or []), 'generator')} with non-zero weight.</p>"]
    members = data.get("members") or []
    if members:
        parts.append("<table border=1 cellpadding=4><tr><th>generator</th><th>weight</th></tr>"
                     + "".join(f"<tr><td>{html.escape(str(m.get('id')))}</td><td>{_fmt(m.get('weight'))}</td></tr>"
                               for m in members) + "</table>")
    candidates = data.get("candidates") or []
    if candidates:
        keys = [k for k in candidates[-1] if k.startswith(("fid_", "tvd_", "is_"))]
        rows = [{**c, "bold": c.get("kind") == "ensemble"} for c in candidates]
        parts.append("<h3>Every candidate, both objectives (estimated from the same statistics)</h3>"
                     + _table(rows, keys, refs, first="candidate"))
        fk = next((k for k in keys if k.startswith("fid_")), None)
        tk = next((k for k in keys if k.startswith("tvd_")), None)
        if fk and tk:
            fig, ax = plt.subplots(figsize=(5.5, 4))
            for c in candidates:
                kind = c.get("kind")
                style = {"generator": ("o", "tab:gray"), "uniform": ("s", "tab:blue")}.get(kind, ("*", "tab:red"))
                ax.scatter(c[tk], c[fk], marker=style[0], color=style[1], s=120 if kind == "ensemble" else 40,
                           zorder=3)
                ax.annotate(str(c["name"]), (c[tk], c[fk]), fontsize=7, xytext=(4, 4), textcoords="offset points")
            ax.set_xlabel(f"{tk} (lower: more balanced classes)")
            ax.set_ylabel(f"{fk} (lower: closer to real images)")
            ax.set_title("candidates: the trade-off between the objectives")
            _save(fig, figdir / "ensemble_tradeoff.png")
            parts.append("<img src='report/ensemble_tradeoff.png'>")
    verified = metrics.get("verified") or {}
    if verified:
        std = metrics.get("verified_std") or {}
        parts.append("<h3>The ensemble re-measured by fresh sampling</h3>" + _table(
            [{"name": "ensemble (verified)", **verified},
             *([{"name": "± sampling noise (std)", **std}] if std else [])],
            [k for k in verified if k.startswith(("fid_", "tvd_", "is_"))], refs))
    if not refs:
        parts.append("<p><i>No reference values for this protocol: run "
                     "<code>ensembler optimize ... --report</code> to add them.</i></p>")
    grid = figdir / ENSEMBLE_GRID
    if grid.is_file():
        parts.append(f"<h3>Samples from the ensemble</h3>{_img(f'report/{ENSEMBLE_GRID}', grid, alt='ensemble')}")
    return "\n".join(parts)
