"""The built Bento runs outside this checkout: a clean venv with only the Bento's requirements.

``serving build`` packs the service's source and the model; the dev install (editable, with
torch and the whole repository on the path) would hide a missing module, so this test exports
the Bento to an archive, imports it into a fresh BentoML home inside a fresh venv that holds
only ``env/python/requirements.txt``, serves it from an empty folder and asks ``/sample`` for a
PNG. It takes about 1-1.5 minutes on 2 cores (most of it is pip installing bentoml's
dependencies from the local mirror or the pip cache).

When pip cannot install those requirements (no index reachable) the test is skipped with
pip's reason, except in CI (``CI`` set), where it must run and a failed install fails it.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving.export import export_ensemble
from serving.openapi import user_spec
from serving.sampler import OnnxSampler
from test_serving import make_ensemble
from test_serving_http import _free_port, _http

VERSION = "cleanvenv"


def _run(cmd: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)


def _clean_env(home: Path, venv: Path) -> dict[str, str]:
    """Only what a fresh shell on another machine would have: no PYTHONPATH, no repository, no dev venv."""
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": os.environ.get("HOME", str(home)),
           "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "MUSTANGS_ORT_THREADS": "1",
           "LANG": "C.UTF-8"}
    for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONFIG_FILE", "PIP_CERT",
                "PIP_DEFAULT_TIMEOUT", "PIP_CACHE_DIR", "XDG_CONFIG_DIRS", "TMPDIR"):
        if key in os.environ:  # how pip reaches the package index here (a mirror, a proxy)
            env[key] = os.environ[key]
    return env


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_bento_serves_from_a_clean_venv(tmp_path):
    # Build the Bento with the dev install and export it as one archive (model included).
    folder = tmp_path / "model"
    folder.mkdir()
    model = folder / "e.onnx"
    export_ensemble(make_ensemble(folder, "mlp", weights=[0.5, 0.25, 0.25]), model)
    build_home = tmp_path / "build-home"
    build_env = {**os.environ, "BENTOML_HOME": str(build_home), "BENTOML_DO_NOT_TRACK": "true"}
    build_env.pop("MUSTANGS_MODEL", None)
    proc = _run([sys.executable, "-m", "serving", "build", model, "--version", VERSION], env=build_env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    archive = tmp_path / "mustangs.bento"
    proc = _run([sys.executable, "-m", "bentoml", "export", f"mustangs:{VERSION}", archive], env=build_env,
                timeout=300)
    assert proc.returncode == 0 and archive.is_file(), proc.stderr[-2000:]
    requirements = build_home / "bentos" / "mustangs" / VERSION / "env" / "python" / "requirements.txt"

    # A fresh venv with only the Bento's requirements, and a fresh BentoML home elsewhere.
    venv, home, elsewhere = tmp_path / "venv", tmp_path / "run-home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _clean_env(home, venv)
    proc = _run([sys.executable, "-m", "venv", venv], env=env, cwd=elsewhere, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    py = venv / "bin" / "python"
    proc = _run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", requirements],
                env=env, cwd=elsewhere, timeout=600)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        if os.environ.get("CI"):
            pytest.fail(f"pip could not install the Bento's requirements in a clean venv: {reason}")
        pytest.skip(f"pip could not install the Bento's requirements (no package index reachable?): {reason}")
    # The venv really is clean: neither torch nor any of this repository's packages is importable.
    probe = "import importlib.util as u; print([m for m in ('torch', 'trainer', 'serving') if u.find_spec(m)])"
    assert _run([py, "-c", probe], env=env, cwd=elsewhere, timeout=60).stdout.strip() == "[]"
    proc = _run([venv / "bin" / "bentoml", "import", archive], env=env, cwd=elsewhere, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]

    # Serve it from an empty folder and ask for a PNG.
    port = _free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen([str(venv / "bin" / "bentoml"), "serve", f"mustangs:{VERSION}", "--host",
                                   "127.0.0.1", "--port", str(port)], env=env, cwd=elsewhere, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while True:
                assert server.poll() is None, log_path.read_text()[-3000:]
                try:
                    if _http(port, "/readyz", method="GET", timeout=2)[0] == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "the Bento did not become ready: " + log_path.read_text()[-3000:]
                time.sleep(0.5)
            status, ctype, png = _http(port, "/sample", json.dumps({"n": 9, "seed": 3}).encode())
            assert status == 200 and ctype == "image/png", png[:500]
            got = np.asarray(Image.open(io.BytesIO(png)))
            want = np.asarray(Image.open(io.BytesIO(OnnxSampler(model, threads=1).sample_png(9, 3))))
            assert got.shape == want.shape  # the same grid the dev install draws, up to rounding
            assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
            # Re-purposing code paths (imported on first use) ship too: explicit weights, /solve.
            status, ctype, png = _http(port, "/sample", json.dumps({"n": 4, "seed": 1, "weights": [0, 1, 1]}).encode())
            assert status == 200 and ctype == "image/png", png[:500]
            status, _, plan = _http(port, "/solve", json.dumps({"weights": [1, 1, 2]}).encode())
            assert status == 200 and json.loads(plan)["weights"] == [0.25, 0.25, 0.5], plan[:500]
            status, _, body = _http(port, "/solve", json.dumps({"target": "uniform"}).encode())
            assert status == 400 and "class statistics" in json.loads(body)["error"], body[:500]
            status, _, spec = _http(port, "/docs.json", method="GET")  # the API page ships too
            assert status == 200 and json.loads(spec)["info"] == json.loads(json.dumps(
                user_spec({"info": {}}, max_n=1024)["info"]))
            assert _http(port, "/docs", method="GET")[0] == 200
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)  # only the process group this test started
                server.wait(timeout=10)
