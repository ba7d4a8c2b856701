"""``serving``: export an ensemble to ONNX, sample from it, serve it over HTTP, build a Bento.

    serving export runs/x/ensemble.json --out ensemble.onnx     one ONNX graph (parity-checked)
    serving sample ensemble.onnx -n 64 --seed 1 --out grid.png  a quick local look (.png or .npy)
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

from trainer.cli import ArgumentParser, HelpFormatter, add_version, console_main
from trainer.cliargs import float_range, int_range, port_type, seed_type, threads_type
from trainer.errors import UserError
from trainer.names import count

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
    from trainer.loaders import read_json_file

    try:
        data = read_json_file(path, "ensemble file")
        base = Path(path).parent
        files = [Path(m["path"]) if Path(m["path"]).is_absolute() else base / m["path"] for m in data["members"]]
    except (UserError, KeyError, TypeError, AttributeError):
        return []  # the export itself reports what is wrong with the file
    return [("member file", str(f)) for f in files] + [("pool", str(f.parent)) for f in files]


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
    """``serving export``: ensemble.json → one ONNX file, optionally parity-checked before it lands."""
    import torch

    from serving.export import export_ensemble
    from trainer.safety import check_suffix, check_writable, guard_output

    guard_output(args.out, {"ensemble": args.ensemble})
    check_suffix(args.out, (".onnx",), what="an ONNX model")
    _check_opset(args.opset)
    guard_output(args.out, _ensemble_inputs(args.ensemble))
    check_writable(args.out)
    torch.set_num_threads(max(1, min(args.threads, os.cpu_count() or 1)))
    judge = args.classifier is not None or args.score_samples > 0
    if judge:  # refuse a wrong judge before writing anything
        from ensembler.ensemble import Ensemble
        from trainer import classifier_store

        from serving.judge import ensemble_dataset

        ensemble = Ensemble.load(args.ensemble)
        ens_meta, dataset = ensemble.meta, ensemble_dataset(ensemble)
        classifier_store.check_dataset(classifier_store.resolve(args.classifier, dataset), dataset,
                                       args.force_classifier, what="the ensemble", log=lambda m: None)
    result = export_ensemble(args.ensemble, args.out, check_parity=args.check, tolerance=args.tolerance,
                             opset=args.opset)
    meta = result.metadata
    print(f"wrote {result.path} ({result.bytes / 1e6:.1f} MB): {count(result.n_generators, 'generator')} "
          f"('{meta['mustangs.arch']}'), latent {meta['mustangs.latent_dim']}, "
          f"samples {json.loads(meta['mustangs.sample_shape'])}")
    if result.max_abs_diff is not None:
        print(f"parity torch vs onnxruntime (N = 1, 7, 1000): max abs diff {result.max_abs_diff:.3g} "
              f"(<= {args.tolerance:g})")
    if judge:
        from serving.judge import judge_model, record_scores

        verdict = judge_model(result.path, dataset, classifier=args.classifier, force=args.force_classifier,
                              n=args.score_samples or 10_000, seed=0, data_dir=args.data_dir,
                              target=ens_meta.get("target_distribution"), threads=args.threads,
                              log=lambda m: print(m, file=sys.stderr))
        record_scores(result.path, verdict)
        clf = verdict["classifier"]
        print(f"served model judged by classifier {clf['name']} ({clf['dataset']}, sha256 {clf['sha256'][:12]}…"
              f"{', FORCED' if clf['forced'] else ''}) on {verdict['samples']} onnxruntime samples: "
              + ", ".join(f"{k}={v:.4g}" for k, v in verdict["metrics"].items()))
    return 0


# ---------------------------------------------------------------------------------------------- sample / info
def cmd_sample(args: argparse.Namespace) -> int:
    """``serving sample``: draw samples with onnxruntime and write a PNG grid or an .npy array."""
    from trainer.atomic import write_bytes_atomic

    from trainer.safety import check_suffix, check_writable, guard_output
    from trainer.sizes import check_samples_memory

    if args.n < 1:
        raise UserError(f"-n must be >= 1, got {args.n}")
    guard_output(args.out, {"model": args.model})
    check_suffix(args.out, (".png", ".npy"), what="a PNG grid or an .npy array")
    from serving.sampler import OnnxSampler

    sampler = OnnxSampler(args.model, threads=args.threads)
    check_samples_memory(args.n, sampler.latent_dim, sampler.sample_shape, f"-n {args.n}", "lower -n", copies=4)
    check_writable(args.out)
    out = Path(args.out)
    data = sampler.sample_npy(args.n, args.seed) if out.suffix == ".npy" else sampler.sample_png(args.n, args.seed)
    write_bytes_atomic(out, data)
    print(f"wrote {out}: {args.n} samples from {args.model} (seed {args.seed}, {sampler.active_providers[0]})")
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
    from trainer.sizes import check_samples_memory

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
    print(f"serving {model} on http://{args.host}:{args.port} (POST /sample, POST /info, API page at /docs)", flush=True)
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
    with bentoml.models.create(STORE_MODEL, labels=labels, metadata=sampler.info()) as stored:
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

    p = sub.add_parser("export", help="export ensemble.json to one ONNX graph", formatter_class=HelpFormatter,
                       description="Export the ensemble's generators into one self-contained ONNX file with inputs "
                                   "z [N, latent] float32 and k [N] int64 and output samples [N, C, H, W]; the "
                                   "mixture weights and shapes travel in its metadata.")
    p.add_argument("ensemble", help="ensemble.json written by 'ensembler optimize'")
    p.add_argument("--out", required=True, help="the .onnx file to write (atomically)")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="compare torch and onnxruntime on N = 1, 7, 1000 before writing; print the max abs diff")
    p.add_argument("--tolerance", type=float_range(0.0), default=1e-4, help="largest max abs diff that --check accepts")
    p.add_argument("--opset", type=int_range(1, 1000), default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--threads", type=threads_type, default=2, help="torch CPU threads for tracing and the parity check")
    p.add_argument("--classifier", default=None, metavar="NAME_OR_DIR",
                   help="score the exported model's samples with this classifier (a folder or .json, or a NAME looked "
                        "up in $MUSTANGS_CACHE/classifiers/ then the package) and store the scores in its metadata "
                        "(mustangs.served_scores); None: no scoring unless --score-samples")
    p.add_argument("--force-classifier", action="store_true",
                   help="accept a classifier trained on another dataset than the ensemble's (recorded as forced)")
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
    p.add_argument("--threads", type=threads_type, default=1, help="onnxruntime threads")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("info", help="print an ONNX model's Mustangs metadata", formatter_class=HelpFormatter)
    p.add_argument("model", help="ensemble.onnx written by 'serving export'")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("serve", help="serve an ONNX model over HTTP with BentoML", formatter_class=HelpFormatter,
                       description="Starts 'bentoml serve serving.service:MustangsSampler' with the model. "
                                   "POST /sample {n, seed, format} → PNG grid or .npy; POST /info; /healthz, "
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
