"""MkDocs hook: publish the benchmark records (``benchmarks/``) as pages of the site.

The RESULTS files live beside the scripts that measured them, not in ``docs/``; this hook adds
``benchmarks/*.md``, the pictures and the JSON records they link to the site's files, under
``benchmarks/``, so their own relative links keep working and the strict build checks them.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = ("*.md", "*.png", "studies/*.json", "studies/*.jsonl", "studies/*.png", "*.json")


def on_files(files: Files, config) -> Files:
    """Add every published benchmark file (path ``benchmarks/...``) to the site's files."""
    for pattern in PUBLISHED:
        for path in sorted((ROOT / "benchmarks").glob(pattern)):
            rel = path.relative_to(ROOT).as_posix()
            if files.get_file_from_path(rel) is None:
                files.append(File(rel, src_dir=str(ROOT), dest_dir=config["site_dir"],
                                  use_directory_urls=config["use_directory_urls"]))
    return files
