"""Idle memory of a started server (issue 12: the target is 80 MB; docs/benchmarks.md,
"Idle memory"). RSS is memory, not time: a loaded machine does not move it, so a bound
well above the measured figure (~94 MB for ``run_server``, SQLite, one worker) cannot
flake, yet catches a large regression (main was 111 MB before the lazy imports, and
``keyfob serve`` 118 MB).
``test_server_footprint`` names the modules that must stay out; this is the total."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from keyfob.settings import Settings
from tests.core.test_server_footprint import start

pytestmark = pytest.mark.slow  # server child processes

BOUND_MB = 108.0


@pytest.mark.parametrize("cli", [False, True], ids=["run_server", "keyfob serve"])
def test_a_started_server_idles_below_the_bound(tmp_path: Path, cli: bool) -> None:
    server = start(tmp_path, Settings(data_dir=tmp_path / "data"), cli=cli)
    try:
        time.sleep(0.5)  # the requests' garbage settles
        rss = server.rss_mb()
    finally:
        server.stop()
    assert rss < BOUND_MB, f"idle RSS {rss:.1f} MB"
