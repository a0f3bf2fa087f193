"""uvicorn's options as ``run_server`` passes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyfob.app.bootstrap import server_options
from keyfob.settings import Settings


@pytest.mark.parametrize(
    ("level", "access"), [("debug", True), ("info", True), ("warning", False), ("error", False)]
)
def test_access_lines_are_built_only_where_they_are_logged(
    tmp_path: Path, level: str, access: bool
) -> None:
    options = server_options(Settings(data_dir=tmp_path, log_level=level))
    assert options["access_log"] is access
    assert options["log_level"] == level
    # The access handler keeps its query-string filter whenever lines are logged.
    assert options["log_config"]["handlers"]["access"]["filters"] == ["query_free"]

