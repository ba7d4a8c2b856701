"""Markdown tables of the two method studies from their JSON records (and run folders).

    python benchmarks/summarize_studies.py --modes runs/study-modes/results-*.json \
        --fmnist runs/study-fmnist/results-s*.json > /tmp/tables.md

Used to fill ``benchmarks/RESULTS-studies.md``; it reads only, so it can run while studies go on
(completed variant × seed records only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def ms(xs, fmt: str) -> str:
    """``mean ± std`` (population of seeds; just the value for one seed)."""
    if len(xs) > 1:
        return f"{statistics.mean(xs):{fmt}} ± {statistics.stdev(xs):{fmt}}"
    return f"{xs[0]:{fmt}}"


def modes_table(records: list[dict]) -> str:
    """Per variant and member kind: seeds, modes covered, full coverage, high quality, TVD, lineages left."""
    from study_modes import summary

    out = [summary(records), "", "| toy | variant | seeds | founders with descendants among the final centres |",
           "|---|---|---|---|"]
    by_variant: dict[tuple, list[int]] = {}
    for r in records:
        if r["member"] == "best-single" and "lineages" in r:   # records of older study versions lack it
            by_variant.setdefault((r["toy"], r["variant"]), []).append(r["lineages"])
    for (toy, variant), xs in sorted(by_variant.items()):
        out.append(f"| {toy} | {variant} | {len(xs)} | {ms(xs, '.1f')} |")
    sizes: dict[tuple, list[int]] = {}
    for r in records:
        if r["member"].startswith("ensemble-"):
            sizes.setdefault((r["toy"], r["variant"], r["member"]), []).append(r["size"])
    out += ["", "| toy | variant | member | re-purposed ensemble size per seed (generators with weight) |",
            "|---|---|---|---|"]
    out += [f"| {t} | {v} | {m} | {', '.join(map(str, xs))} |" for (t, v, m), xs in sorted(sizes.items())]
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", nargs="*", default=[], help="study_modes JSON files")
    p.add_argument("--fmnist", nargs="*", default=[], help="study_fmnist JSON files")
    args = p.parse_args()
    if args.modes:
        records = [r for f in args.modes for r in json.loads(Path(f).read_text())]
        print("### Mode coverage (rings-8, grid-25)\n")
        print(modes_table(records))
    if args.fmnist:
        from study_fmnist import table

        records = [r for f in args.fmnist for r in json.loads(Path(f).read_text())]
        print("\n### Fashion-MNIST 3×3\n")
        print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
