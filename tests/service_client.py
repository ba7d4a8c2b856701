"""One way to open the BentoML service in-process for tests (starlette TestClient).

BentoML registers its HTTP metrics in prometheus' process-wide registry when an app starts, so a
second service app in the same pytest process fails with "Duplicated timeseries". Every test
module that opens the service goes through ``service_client``, which clears those metrics before
the app starts and after it stops.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Iterator

import pytest


def forget_bentoml_metrics() -> None:
    """Unregister BentoML's collectors from prometheus' global registry."""
    import prometheus_client

    registry = prometheus_client.REGISTRY
    for collector, names in list(registry._collector_to_names.items()):
        if any(n.startswith("bentoml_") for n in names):
            registry.unregister(collector)


@contextlib.contextmanager
def service_client(model: Path, bentoml_home: Path) -> Iterator[object]:
    """A TestClient on the service's ASGI app; the ``with`` runs the lifespan that builds it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's "use httpx2" deprecation notice
        from starlette.testclient import TestClient

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MUSTANGS_MODEL", str(model))
        mp.setenv("MUSTANGS_ORT_THREADS", "1")
        mp.setenv("BENTOML_DO_NOT_TRACK", "true")
        mp.setenv("BENTOML_HOME", str(bentoml_home))
        from serving.service import MustangsSampler

        forget_bentoml_metrics()
        try:
            with TestClient(MustangsSampler.to_asgi()) as c:
                yield c
        finally:
            forget_bentoml_metrics()
