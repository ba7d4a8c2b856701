"""``serving``: export an ensemble to ONNX, sample from it, serve it over HTTP, build a Bento.

    serving export runs/x/ensemble.json --out ensemble.onnx     one ONNX graph (parity-checked)
    serving export runs/x/pool --out pool.onnx                  every generator of a pool (re-aim per request)
    serving export front.json --point 3 --out p3.onnx           one point of 'ensembler front'
    serving sample ensemble.onnx -n 64 --seed 1 --out grid.png  a quick local look (.png or .npy)
    serving sample pool.onnx --target "Sneaker:0.5,Bag:0.5"     re-aimed at a class mix
    serving info ensemble.onnx                                  the model's metadata as JSON
    serving serve ensemble.onnx --port 3000                     BentoML HTTP service (POST /sample)
    serving build ensemble.onnx                                 a Bento with the model inside
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from mustangs.console.args import float_range, int_range, port_type, seed_type, threads_type
from mustangs.console.formatting import ArgumentParser, HelpFormatter, add_version, console_main
from mustangs.errors import UserError
from mustangs.names import count

REPO_ROOT = Path(__file__).resolve().parents[1]
BENTOFILE = Path(__file__).resolve().parent / "bentofile.yaml"


def bentoml_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for BentoML: no usage tracking, and its home under the user's cache (unless set)."""
    env = dict(os.environ)
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    env.setdefault("BENTOML_HOME", str(cache / "mustangs" / "bentoml"))
    env.update(extra or {})
    return env


def _apply_bentoml_env() -> None:
    for key in ("BENTOML_DO_NOT_TRACK", "BENTOML_HOME"):
        os.environ.setdefault(key, bentoml_env()[key])


def _require_bentoml(verb: str) -> None:
    """``serving serve`` / ``build`` need the ``serve`` extra; say so in one line when it is missing."""
    import importlib.util

    if importlib.util.find_spec("bentoml") is None:
        raise UserError(f"'serving {verb}' needs BentoML: pip install 'mustangs[serve]' (or make setup)")


def _check_model(path: str):
    """Open the model once here, so a wrong path is one line and exit 2, not a server traceback."""
    from serving.sampler import OnnxSampler

    return OnnxSampler(path, threads=1)


def _check_port(host: str, port: int) -> None:
    """Bind ``host:port`` once, so a taken port or a bad address is one line here, not a server traceback."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UserError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            import errno

            if exc.errno == errno.EADDRINUSE:
                raise UserError(f"port {port} on {host} is already in use; stop what uses it or pass another "
                                "--port") from None
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _ensemble_inputs(path: str) -> list[tuple[str, str]]:
    """The member weights files and pool folders an ensemble.json reads (best effort: unreadable → none)."""
    from mustangs.io.loaders import read_json_file

    try:
        data = read_json_file(path, "ensemble file")
        base = Path(path).parent
        files = [Path(m["path"]) if Path(m["path"]).is_absolute() else base / m["path"] for m in data["members"]]
    except (UserError, KeyError, TypeError, AttributeError):
        return []  # the export itself reports what is wrong with the file
    return [("member file", str(f)) for f in files] + [("pool", str(f.parent)) for f in files]


def _source_inputs(sources) -> list[tuple[str, str]]:
    """What ``serving export`` reads, as inputs for :func:`mustangs.io.safety.guard_output`."""
    pairs = []
    for src in sources:
        p = Path(src)
        if p.name == "manifest.json":
            pairs.append(("pool", str(p.parent)))
        pairs.append(("pool" if p.is_dir() else "ensemble", str(p)))
    return pairs


def _check_opset(opset: int | None) -> None:
    """The opsets the exporter really targets: its own (no silent down-conversion) up to onnx's newest."""
    if opset is None:
        return
    import onnx
    from torch.onnx import _constants

    lo = int(getattr(_constants, "TORCHLIB_OPSET", 18))
    hi = min(int(getattr(_constants, "ONNX_MAX_OPSET", lo)), int(onnx.defs.onnx_opset_version()))
    if not lo <= opset <= hi:
        raise UserError(f"--opset {opset} is not supported by this exporter; use {lo}..{hi} (or leave it out)")


# ---------------------------------------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    """``serving export``: pool(s) / ensemble.json / a front point → one ONNX file with re-purposing statistics."""
    import torch

    from mustangs.io.safety import check_suffix, check_writable, guard_output
    from serving.export import export_model, load_source, repurpose_stats

    out = Path(args.out)
    inputs = _source_inputs(args.sources)
    guard_output(args.out, inputs)
    check_suffix(args.out, (".onnx",), what="an ONNX model")
    _check_opset(args.opset)
    for src in args.sources:
        if Path(src).is_file():
            guard_output(args.out, _ensemble_inputs(src))
    if args.cache_dir:
        guard_output(args.cache_dir, inputs + [("--out file", args.out)], flag="--cache-dir")
    check_writable(args.out)
    torch.set_num_threads(max(1, min(args.threads, os.cpu_count() or 1)))
    ensemble, digest, kind = load_source(args.sources, args.point)
    guard_output(args.out, [("member file", str(m.path)) for m in ensemble.members]
                 + [("pool", str(m.path.parent)) for m in ensemble.members])
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    judge = args.classifier is not None or args.score_samples > 0
    ens_meta, dataset = ensemble.meta, ""
    if judge:  # refuse a wrong judge before any work or writing
        from mustangs.judge import classifier_store

        from serving.judge import ensemble_dataset

        dataset = ensemble_dataset(ensemble)
        classifier_store.check_dataset(classifier_store.resolve(args.classifier, dataset), dataset,
                                       args.force_classifier, what="the ensemble", log=lambda m: None)
    stats = None
    if args.stats:
        if not dataset:
            from serving.judge import ensemble_dataset

            try:
                dataset = ensemble_dataset(ensemble)
            except UserError:
                dataset = ""
        if not dataset:
            log("note: the source records no dataset, so the model carries no class statistics "
                "(targets will be refused); export from the pool to enable them")
        else:
            try:
                stats = repurpose_stats(ensemble, dataset, args.stats_samples, args.stats_seed, args.device,
                                        cache_dir=args.cache_dir, log=log, classifier=args.classifier,
                                        force=args.force_classifier, data_dir=args.data_dir)
            except UserError as exc:
                if args.classifier is not None:
                    raise  # the judge the user named must work
                log(f"note: no class statistics in the model ({exc})")
    import contextlib
    import dataclasses

    from mustangs.io.atomic import atomic_path

    with contextlib.ExitStack() as stack:
        # A judged model is exported, judged and scored under a temporary name and only then renamed
        # over --out: a failure (a full disk while recording the scores) leaves the old file as it was.
        work = stack.enter_context(atomic_path(out)) if judge else out
        result = export_model(ensemble, work, source_sha256=digest, source_kind=kind, stats=stats,
                              check_parity=args.check, tolerance=args.tolerance, opset=args.opset)
        if judge:
            verdict = _judge(args, work, dataset, ens_meta)
    result = dataclasses.replace(result, path=out)
    meta = result.metadata
    stats_bytes = sum(len(meta[k]) for k in meta if k.startswith("mustangs.repurpose"))
    extra = (f"; class statistics of {stats.info['samples_per_generator']} samples per generator on "
             f"{stats.info['classifier']['name']} ({stats_bytes / 1e6:.2f} MB of it)" if stats is not None else "")
    print(f"wrote {result.path} ({result.bytes / 1e6:.1f} MB): {count(result.n_generators, 'generator')} "
          f"('{meta['mustangs.arch']}') from {'an' if kind[:1] in 'aeiou' else 'a'} {kind}, latent {meta['mustangs.latent_dim']}, "
          f"samples {json.loads(meta['mustangs.sample_shape'])}{extra}")
    if result.max_abs_diff is not None:
        print(f"parity torch vs onnxruntime (N = 1, 7, 1000): max abs diff {result.max_abs_diff:.3g} "
              f"(<= {args.tolerance:g})")
    if judge:
        clf = verdict["classifier"]
        print(f"served model judged by classifier {clf['name']} ({clf['dataset']}, sha256 {clf['sha256'][:12]}…"
              f"{', FORCED' if clf['forced'] else ''}) on {verdict['samples']} onnxruntime samples: "
              + ", ".join(f"{k}={v:.4g}" for k, v in verdict["metrics"].items()))
    return 0


def _judge(args: argparse.Namespace, path: Path, dataset, ens_meta: dict) -> dict:
    """Judge the exported model at ``path`` with onnxruntime and record the verdict in it."""
    from serving.judge import judge_model, record_scores

    verdict = judge_model(path, dataset, classifier=args.classifier, force=args.force_classifier,
                          n=args.score_samples or 10_000, seed=0, data_dir=args.data_dir,
                          target=ens_meta.get("target_distribution"), threads=args.threads,
                          log=lambda m: print(m, file=sys.stderr))
    record_scores(path, verdict)
    return verdict


# ---------------------------------------------------------------------------------------------- sample / info
def cmd_sample(args: argparse.Namespace) -> int:
    """``serving sample``: draw samples with onnxruntime and write a PNG grid or an .npy array."""
    from mustangs.io.atomic import write_bytes_atomic

    from mustangs.io.safety import check_samples_memory
    from mustangs.io.safety import check_suffix, check_writable, guard_output

    if args.n < 1:
        raise UserError(f"-n must be >= 1, got {args.n}")
    guard_output(args.out, {"model": args.model})
    check_suffix(args.out, (".png", ".npy"), what="a PNG grid or an .npy array")
    from serving.repurpose import parse_target_text
    from serving.sampler import OnnxSampler

    sampler = OnnxSampler(args.model, threads=args.threads)
    check_samples_memory(args.n, sampler.latent_dim, sampler.sample_shape, f"-n {args.n}", "lower -n", copies=4)
    target = parse_target_text(args.target) if args.target is not None else None
    weights = None
    if args.weights is not None:
        try:
            weights = [float(x) for x in args.weights.split(",") if x.strip()]
        except ValueError:
            raise UserError(f"--weights must be comma-separated numbers, got {args.weights!r}") from None
    plan = sampler.plan(target, weights, args.fid_weight)
    check_writable(args.out)
    out = Path(args.out)
    data = (sampler.sample_npy(args.n, args.seed, plan=plan) if out.suffix == ".npy"
            else sampler.sample_png(args.n, args.seed, plan=plan))
    write_bytes_atomic(out, data)
    how = ""
    if plan.source == "target":
        how = f", target solved: estimated tvd {plan.estimated_tvd:.4f}"
        if plan.estimated_fid is not None:
            how += f", estimated fid_cls {plan.estimated_fid:.2f}"
        how += ", weights " + ", ".join(f"{g}={w:.3f}" for g, w in zip(sampler.generator_ids, plan.weights) if w > 0)
    print(f"wrote {out}: {args.n} samples from {args.model} (seed {args.seed}, {sampler.active_providers[0]}{how})")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """``serving info``: print the model's metadata as JSON."""
    print(json.dumps(_check_model(args.model).info(), indent=2))
    return 0


# ---------------------------------------------------------------------------------------------- serve / build
def cmd_serve(args: argparse.Namespace) -> int:
    """``serving serve``: check the model, then replace this process with ``bentoml serve``."""
    _require_bentoml("serve")
    from serving.service import MAX_N_ENV, MODEL_ENV, THREADS_ENV

    if args.max_n < 1:
        raise UserError(f"--max-n must be >= 1, got {args.max_n}")
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be in 1..65535, got {args.port}")
    from mustangs.io.safety import check_samples_memory

    model = str(Path(args.model).resolve())
    sampler = _check_model(model)
    check_samples_memory(args.max_n, sampler.latent_dim, sampler.sample_shape, f"--max-n {args.max_n}",
                         "lower --max-n", copies=4)
    _check_port(args.host, args.port)
    extra = {MODEL_ENV: model, MAX_N_ENV: str(args.max_n)}
    if args.threads:
        extra[THREADS_ENV] = str(args.threads)
    env = bentoml_env(extra)
    argv = [sys.executable, "-m", "bentoml", "serve", "serving.service:MustangsSampler",
            "--host", args.host, "--port", str(args.port), "--working-dir", str(REPO_ROOT)]
    print(f"serving {model} on http://{args.host}:{args.port} (POST /sample, POST /solve, POST /info, "
          "API page at /docs)", flush=True)
    os.execve(sys.executable, argv, env)
    return 0  # not reached


def cmd_build(args: argparse.Namespace) -> int:
    """``serving build``: put the model in BentoML's model store, then ``bentoml build`` a Bento with it."""
    _require_bentoml("build")
    _apply_bentoml_env()
    sampler = _check_model(args.model)
    import bentoml

    from serving.service import MODEL_FILE, STORE_MODEL

    labels = {"arch": sampler.arch, "generators": str(len(sampler.weights))}
    with bentoml.models.create(STORE_MODEL, labels=labels, metadata=_without_none(sampler.info())) as stored:
        shutil.copyfile(args.model, stored.path_of(MODEL_FILE))
    print(f"stored the model as {stored.tag} (BENTOML_HOME={os.environ['BENTOML_HOME']})")
    env = bentoml_env()
    env.pop("MUSTANGS_MODEL", None)  # the Bento must use the stored model, not a local file
    cmd = [sys.executable, "-m", "bentoml", "build", "-f", str(BENTOFILE), str(REPO_ROOT)]
    if args.version:
        cmd += ["--version", args.version]
    proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise UserError(f"bentoml build failed: {tail[0]}")
    tag = _bento_tag(proc.stdout)
    print(f"built Bento {tag or '(see bentoml list)'}; run it with 'bentoml serve {tag or 'mustangs:latest'}' "
          f"or make an image with 'bentoml containerize {tag or 'mustangs:latest'}'")
    return 0


def _without_none(value):
    """``value`` with every ``None`` dropped from dicts and lists (BentoML's model metadata refuses None)."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value if v is not None]
    return value


def _bento_tag(output: str) -> str | None:
    import re

    match = re.search(r'Bento\(tag="([^"]+)"\)', output) or re.search(r"\b(mustangs:[a-z0-9]+)\b", output)
    return match.group(1) if match else None


# ---------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The full ``serving`` argument parser."""
    parser = ArgumentParser(prog="serving", description=__doc__, formatter_class=HelpFormatter)
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    p = sub.add_parser("export", help="export an ensemble.json, a front.json point or whole pools to one ONNX graph", formatter_class=HelpFormatter,
                       description="Export an ensemble's generators (an ensemble.json, a front.json with --point, or every generator of "
                                   "one or more pool folders) into one self-contained ONNX file with inputs "
                                   "z [N, latent] float32 and k [N] int64 and output samples [N, C, H, W]; the "
                                   "mixture weights and shapes travel in its metadata.")
    p.add_argument("sources", nargs="+", metavar="POOL_OR_ENSEMBLE",
                   help="pool folder(s) (every generator, uniform default weights), an ensemble.json (its members "
                        "and weights) or a front.json with --point")
    p.add_argument("--out", required=True, help="the .onnx file to write (atomically)")
    p.add_argument("--point", type=int_range(0, 9_999), default=None, help="the point of a front.json to export")
    p.add_argument("--stats", action=argparse.BooleanOptionalAction, default=True,
                   help="store per-generator class histograms and feature moments on the evaluation classifier, "
                        "so requests can re-aim the mixture at a class target")
    p.add_argument("--stats-samples", type=int_range(2, 10_000_000), default=10_000,
                   help="samples per generator for those statistics")
    p.add_argument("--stats-seed", type=seed_type, default=7_919,
                   help="latent seed of the statistics samples; the default is ensembler.stats.held_out_seed(0), "
                        "samples 'ensembler optimize' did not search on, so the served estimates are held-out")
    p.add_argument("--device", default="auto", help="device for the statistics: auto | cpu | cuda[:i]")
    p.add_argument("--cache-dir", default=None, help="statistics cache (None: $MUSTANGS_CACHE/ensembler-stats)")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="compare torch and onnxruntime on N = 1, 7, 1000 before writing; print the max abs diff")
    p.add_argument("--tolerance", type=float_range(0.0), default=1e-4, help="largest max abs diff that --check accepts")
    p.add_argument("--opset", type=int_range(1, 1000), default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--threads", type=threads_type, default=2, help="torch CPU threads for tracing and the parity check")
    p.add_argument("--classifier", default=None, metavar="NAME_OR_DIR",
                   help="the judge (a folder or .json, or a NAME looked up in $MUSTANGS_CACHE/classifiers/ then the "
                        "package): the re-purposing statistics are measured with it, and the exported model's samples "
                        "are scored with it into its metadata (mustangs.served_scores); None: the one for the "
                        "dataset, and no scoring unless --score-samples")
    p.add_argument("--force-classifier", action="store_true",
                   help="accept a classifier trained on another dataset than the source's (recorded as forced)")
    p.add_argument("--score-samples", type=int_range(0, 10_000_000), default=0,
                   help="samples for that scoring (0: 10000 when --classifier is given, else no scoring)")
    p.add_argument("--data-dir", default=None,
                   help="folder with the real dataset files (for fid and precision/recall/density/coverage/kid)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("sample", help="draw samples from an ONNX model into a PNG grid or .npy",
                       formatter_class=HelpFormatter)
    p.add_argument("model", help="ensemble.onnx written by 'serving export'")
    p.add_argument("-n", type=int_range(1, 10_000_000), default=64, help="number of samples")
    p.add_argument("--seed", type=seed_type, default=None, help="seed (omit for a random draw)")
    p.add_argument("--out", default="samples.png", help="output file: .png (grid) or .npy (float32 array)")
    p.add_argument("--target", default=None,
                   help="class target solved per draw: 'Sneaker:0.5,Bag:0.5' (names or indices), one weight per "
                        "class, 'uniform', 'real' or JSON (None: the model's weights)")
    p.add_argument("--weights", default=None, help="explicit per-generator weights, comma-separated")
    p.add_argument("--fid-weight", type=float_range(0.0, 1e6), default=0.0,
                   help="λ in the solved tvd + λ·fid (with --target)")
    p.add_argument("--threads", type=threads_type, default=1, help="onnxruntime threads")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("info", help="print an ONNX model's Mustangs metadata", formatter_class=HelpFormatter)
    p.add_argument("model", help="ensemble.onnx written by 'serving export'")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("serve", help="serve an ONNX model over HTTP with BentoML", formatter_class=HelpFormatter,
                       description="Starts 'bentoml serve serving.service:MustangsSampler' with the model. "
                                   "POST /sample {n, seed, format, target | weights} → PNG grid or .npy; POST /solve "
                                   "{target | weights} → the mixture weights and estimates; POST /info; /healthz, "
                                   "/readyz; the API page at / and /docs (spec at /docs.json).")
    p.add_argument("model", help="ensemble.onnx written by 'serving export'")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=port_type, default=3000, help="TCP port")
    p.add_argument("--max-n", type=int_range(1, 1_000_000), default=1024, help="largest n one request may ask for")
    p.add_argument("--threads", type=threads_type, default=None, help="onnxruntime threads per worker (default: all cores)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("build", help="build a Bento (deployable archive) with the model inside",
                       formatter_class=HelpFormatter,
                       description="Stores the model in BentoML's model store as mustangs-ensemble and runs "
                                   "'bentoml build -f serving/bentofile.yaml' offline; then 'bentoml containerize "
                                   "mustangs:latest' makes a Docker image.")
    p.add_argument("model", help="ensemble.onnx written by 'serving export'")
    p.add_argument("--version", default=None, help="Bento version (default: generated by BentoML)")
    p.set_defaults(func=cmd_build)
    return parser


main = console_main(build_parser, "serving")


if __name__ == "__main__":
    sys.exit(main())
