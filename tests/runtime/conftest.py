"""Runtime-test fixtures: `cgdeploy bench` would measure this machine's GEMM peaks (~15 s) and cache them in
~/.cache/cgdeploy. Here the cache lives in a session temp folder and the measurement returns peak_fakes'
numbers at once; tests/runtime/test_bench_peaks.py drives the real probes and the cache on purpose."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from peak_fakes import fake_entries

from cyclegan_deploy.bench import peaks


@pytest.fixture(scope="session", autouse=True)
def _peaks_without_measuring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CGDEPLOY_CACHE", str(tmp_path_factory.mktemp("cgdeploy-cache")))
        mp.setattr(peaks, "measure_peaks", lambda *a, **k: fake_entries())
        yield
