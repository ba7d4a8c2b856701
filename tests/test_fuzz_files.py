"""Generated hostile inputs (hypothesis): every case ends in success or one ``error:`` line with
exit 2 — never a traceback — and never changes its input file.

Valid documents (config YAML and overrides, manifest.json, ensemble.json, classifier JSON, target
strings, .npy samples) are mutated: values replaced by wrong types, NaN/inf, huge numbers,
unicode, nesting; keys deleted or added; the text truncated. The CI profile runs a few dozen
cases per test with a fixed seed; ``--hypothesis-profile=long`` runs 500 fresh ones.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import event, given, strategies as st  # noqa: E402

from mustangs.errors import exit_on_user_error  # noqa: E402

HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["", "\u202e", "\U0001f4a5", "../../etc/passwd", "1e308", "nan", "x" * 3000, "-0", "0x10"]),
    st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.builds(lambda: [[[[[[[[]]]]]]]]))  # a fresh object each time: cases may mutate it


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


@st.composite
def mutated(draw, doc):
    """``doc`` with 1-3 of: a value replaced, a key deleted, a key added (JSON-like documents)."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from([p for p in _paths(doc) if p]))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        op = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if op == "replace":
            parent[path[-1]] = draw(HOSTILE)
        elif op == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=6))] = draw(HOSTILE)
        else:
            parent.append(draw(HOSTILE))
        if not isinstance(doc, dict) or not doc:
            break
    return doc


def as_text(draw, doc) -> str:
    text = json.dumps(doc, indent=1, allow_nan=True)
    cut = draw(st.sampled_from([None, None, None, "truncate", "junk"]))
    if cut == "truncate":
        text = text[:draw(st.integers(0, max(0, len(text) - 1)))]
    elif cut == "junk":
        i = draw(st.integers(0, len(text)))
        text = text[:i] + draw(st.text(max_size=8)) + text[i:]
    return text


def outcome(fn, *inputs: Path) -> tuple[int, str]:
    """Run ``fn`` as a CLI would (``exit_on_user_error``): (exit code, stderr). Inputs must not change."""
    before = {p: p.read_bytes() for p in inputs}
    err = io.StringIO()

    def main():
        fn()
        return 0

    with contextlib.redirect_stderr(err):
        code = exit_on_user_error(main)()
    assert code in (0, 2), err.getvalue()
    if code == 2:
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err.getvalue()
    assert {p: p.read_bytes() for p in inputs} == before, "an input changed"
    return code, err.getvalue()


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory) -> Path:
    from conftest import rings_pool

    return rings_pool(tmp_path_factory.mktemp("fuzz") / "pool")


# --------------------------------------------------------------------------- target strings

TARGET_TEXT = st.text(alphabet="0123456789:,.-e Sneakrbg{}[]\"uniform", max_size=30)


@given(TARGET_TEXT)
def test_target_strings(text):
    from mustangs.judge.metrics import parse_target
    from serving.repurpose import resolve_target

    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    outcome(lambda: parse_target(text, 10))
    outcome(lambda: resolve_target(text, names))


@given(st.lists(st.tuples(st.integers(0, 9), st.floats(0, 5, allow_nan=False)), min_size=1, max_size=5))
def test_index_targets_agree_and_refuse_a_class_named_twice(pairs):
    """``trainer score``/``ensembler`` (parse_target) and serving (resolve_target) read ``i:w,...`` alike."""
    from mustangs.judge.metrics import parse_target
    from serving.repurpose import resolve_target

    text = ",".join(f"{c}:{w!r}" for c, w in pairs)
    a = outcome(lambda: parse_target(text, 10))
    b = outcome(lambda: resolve_target(text, [f"c{i}" for i in range(10)]))
    if len({c for c, _ in pairs}) < len(pairs):
        assert a[0] == b[0] == 2 and "twice" in a[1] and "twice" in b[1]
    else:
        assert a[0] == b[0]
        if a[0] == 0:
            assert np.allclose(parse_target(text, 10), resolve_target(text, [f"c{i}" for i in range(10)]))


# --------------------------------------------------------------------------- config YAML and overrides

KEYS = ["seed", "threads", "grid.height", "grid.width", "mixture.sigma", "data.batch_size", "data.sampling_ratio",
        "coevolution.generations", "coevolution.lr_g", "network.latent_dim", "loss", "device", "nope.key"]


@given(st.data())
def test_configs_and_overrides(data):
    import yaml

    from trainer.cli import main as trainer_main
    from trainer.config import TrainConfig
    from trainer.configio import to_dict

    doc = data.draw(mutated(to_dict(TrainConfig())))
    text = yaml.safe_dump(doc) if data.draw(st.booleans()) else as_text(data.draw, doc)
    overrides = data.draw(st.lists(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS),
                                             st.one_of(st.text(max_size=8), HOSTILE.map(str))), max_size=2))
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d, "cfg.yaml")
        cfg.write_text(text)
        before = cfg.read_bytes()
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = trainer_main(["train", str(cfg), "--out", f"{d}/run", "--dry-run", *overrides])
            except SystemExit as exc:  # argparse
                code = exc.code
        assert code in (0, 2), err.getvalue()
        if code == 2:
            lines = err.getvalue().strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), err.getvalue()
        assert cfg.read_bytes() == before and not Path(d, "run").exists()


# --------------------------------------------------------------------------- manifest.json, ensemble.json

@given(st.data())
def test_manifests(pool_dir, data):
    from mustangs.pool.format import read_pool

    doc = json.loads((pool_dir / "manifest.json").read_text())
    text = as_text(data.draw, data.draw(mutated(doc)))
    with tempfile.TemporaryDirectory() as d:
        root = Path(d, "pool")
        shutil.copytree(pool_dir, root)
        (root / "manifest.json").write_text(text)
        outcome(lambda: read_pool(root).load_generators(), *root.iterdir())


@given(st.data())
def test_ensembles(pool_dir, data):
    from ensembler.ensemble import Ensemble
    from mustangs.pool.format import read_pool

    with tempfile.TemporaryDirectory() as d:
        path = Path(d, "e.json")
        Ensemble.from_pool(read_pool(pool_dir), [0.5, 0.3, 0.2]).save(path)
        text = as_text(data.draw, data.draw(mutated(json.loads(path.read_text()))))
        path.write_text(text)
        outcome(lambda: Ensemble.load(path).generators, path)


# --------------------------------------------------------------------------- classifier JSON

@given(st.data())
def test_classifier_json(data):
    import mustangs.judge.classifier_store as store

    assets = Path(store.__file__).parent / "assets"
    doc = json.loads((assets / "classifier-fashion-mnist.json").read_text())
    text = as_text(data.draw, data.draw(mutated(doc)))
    with tempfile.TemporaryDirectory() as d:
        shutil.copy(assets / "classifier-fashion-mnist.safetensors", d)
        meta = Path(d, "classifier-fashion-mnist.json")
        meta.write_text(text)
        outcome(lambda: store.load_checked(d, "fashion-mnist"), meta)


# --------------------------------------------------------------------------- .npy sample files

DTYPES = st.sampled_from(["uint8", "float32", "float64", "float16", "int64", "bool", "complex64", "int8", ">f4"])
SHAPES = st.sampled_from([(3, 1, 28, 28), (2, 28, 28), (4, 784), (0, 1, 28, 28), (2, 3, 28, 28), (5,), (),
                          (1, 1, 28, 27), (2, 1, 1, 28, 28)])


@given(DTYPES, SHAPES, st.sampled_from([0.0, 1.0, 255.0, -1e30, float("nan"), float("inf")]),
       st.sampled_from([None, 0, 10, 100, 1000]))
def test_npy_samples(dtype, shape, fill, cut):
    from mustangs.judge.evaluation import read_npy_samples

    with tempfile.TemporaryDirectory() as d:
        path = Path(d, "x.npy")
        with np.errstate(all="ignore"):
            arr = np.full(shape, fill).astype(dtype)
        np.save(path, arr)
        if cut is not None:
            path.write_bytes(path.read_bytes()[:cut])
        outcome(lambda: read_npy_samples(path, (1, 28, 28), 2), path)


# --------------------------------------------------------------------------- front.json (ensembler front)

@pytest.fixture(scope="module")
def front_file(tmp_path_factory) -> Path:
    """A real ``front.json`` of ``ensembler front`` over a rings pool (members relative to its folder)."""
    from conftest import rings_pool
    from ensembler.cli import main as ensembler_main

    d = tmp_path_factory.mktemp("front")
    pool = rings_pool(d / "pool")
    argv = ["front", str(pool), "--objectives", "tvd,fid", "--classifier", "rings", "--scalarisations", "2",
            "--budget", "20", "--samples", "500", "--diversity-samples", "0", "--device", "cpu",
            "--out", str(d / "front.json")]
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        assert ensembler_main(argv) == 0
    return d / "front.json"


@given(st.data())
def test_fronts(front_file, data):
    """A mutated ``front.json`` beside the real one (so member paths still resolve): reading it and
    loading a point (what ``serving export front.json --point I`` does) succeeds or says why."""
    from ensembler.front import load_front_point

    doc = json.loads(front_file.read_text())
    text = as_text(data.draw, data.draw(mutated(doc)))
    index = data.draw(st.sampled_from([0, len(doc["points"]) - 1, len(doc["points"]), -1]))
    path = front_file.with_name("case.json")
    path.write_text(text)
    try:
        code, _ = outcome(lambda: load_front_point(path, index).generators, path,
                          *front_file.parent.joinpath("pool").iterdir())
        event(f"exit {code}")   # --hypothesis-show-statistics: how many cases load, how many are refused
    finally:
        path.unlink()


# --------------------------------------------------------------------------- ONNX metadata (serving)

@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    """An exported rings ensemble with re-purposing statistics and served scores in its metadata."""
    from conftest import rings_pool
    from ensembler.ensemble import Ensemble
    from mustangs.pool.format import read_pool
    from serving.cli import main as serving_main

    d = tmp_path_factory.mktemp("onnx")
    Ensemble.from_pool(read_pool(rings_pool(d / "pool")), [0.5, 0.3, 0.2]).save(d / "e.json")
    argv = ["export", str(d / "e.json"), "--out", str(d / "m.onnx"), "--classifier", "rings", "--stats-samples", "500",
            "--score-samples", "500", "--device", "cpu", "--no-check", "--threads", "1"]
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        assert serving_main(argv) == 0
    return d / "m.onnx"


def _json_or_none(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


@st.composite
def mutated_metadata(draw, props: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``metadata_props`` with 1-3 of: a value replaced by a hostile one (another JSON type, mutated
    JSON, cut short), an entry deleted, duplicated or added, or the re-purposing payload's bytes
    cut or flipped with its sha256 recomputed (so the decoder itself is reached)."""
    import base64
    import hashlib

    from serving.repurpose import META_PAYLOAD, META_SHA256

    props = list(props)
    for _ in range(draw(st.integers(1, 3))):
        if not props:
            break
        i = draw(st.integers(0, len(props) - 1))
        key, value = props[i]
        op = draw(st.sampled_from(["hostile", "json", "cut", "delete", "duplicate", "add", "payload"]))
        if op == "hostile":
            props[i] = (key, draw(st.one_of(HOSTILE.map(lambda v: json.dumps(v, allow_nan=True)), HOSTILE.map(str))))
        elif op == "json":
            doc = _json_or_none(value)
            if isinstance(doc, (dict, list)) and doc:
                props[i] = (key, as_text(draw, draw(mutated(doc))))
            else:
                props[i] = (key, json.dumps(draw(HOSTILE), allow_nan=True))
        elif op == "cut":
            props[i] = (key, value[:draw(st.integers(0, max(0, len(value) - 1)))])
        elif op == "delete":
            del props[i]
        elif op == "duplicate":
            props.append((key, draw(st.text(max_size=8))))
        elif op == "add":
            key = draw(st.sampled_from(["mustangs.", "mustangs.x", "", "\U0001f4a5"])) + draw(st.text(max_size=4))
            props.append((key, draw(HOSTILE.map(str))))
        else:
            meta = dict(props)
            try:   # absent, or already cut by an earlier step of this case: nothing to flip
                raw = bytearray(base64.b64decode(meta[META_PAYLOAD], validate=True))
            except (KeyError, ValueError):
                continue
            if not raw:
                continue
            if draw(st.booleans()):
                raw = raw[:draw(st.integers(0, len(raw) - 1))]
            else:
                for _ in range(draw(st.integers(1, 8))):
                    j = draw(st.integers(0, len(raw) - 1))
                    raw[j] ^= draw(st.integers(1, 255))
            meta[META_PAYLOAD] = base64.b64encode(bytes(raw)).decode("ascii")
            meta[META_SHA256] = hashlib.sha256(bytes(raw)).hexdigest()
            props = list(meta.items())
    return props


@given(st.data())
def test_onnx_metadata(onnx_model, data):
    """A model whose ``metadata_props`` were edited: loading it (``serving info``/``sample``, the service)
    gives its info and samples, or one line, exit 2."""
    import onnx

    from serving.sampler import OnnxSampler

    model = onnx.load(str(onnx_model))
    props = data.draw(mutated_metadata([(p.key, p.value) for p in model.metadata_props]))
    del model.metadata_props[:]
    for key, value in props:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    with tempfile.TemporaryDirectory() as d:
        path = Path(d, "m.onnx")
        onnx.save(model, str(path))

        def load():
            sampler = OnnxSampler(path, threads=1)
            json.dumps(sampler.info())
            sampler.sample(4, seed=0)

        event(f"exit {outcome(load, path)[0]}")
