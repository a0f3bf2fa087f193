"""Files in the data directory are private whatever the umask (item 15).

Failed before the fix: under umask 000 the database (and SQLite's -wal and -shm files)
came out 0666, readable by every local user.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from keyfob.app.bootstrap import init_vault
from keyfob.settings import Settings
from tests.support import loopback
from tests.support.server import start_server


def modes(directory: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}


def test_data_files_are_0600_and_the_directory_0700_under_umask_000(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    previous = os.umask(0)
    try:
        token = init_vault(settings).operator_token
        assert token is not None
        server = start_server(settings, token.reveal(), tmp_path / "server.log")
    finally:
        os.umask(previous)
    try:
        answer = loopback.post(
            server.url + "/v1/agents",
            json={"name": "modes"},
            headers={"Authorization": f"Bearer {token.reveal()}"},
        )
        assert answer.status_code == 201, answer.text
        files = modes(settings.data_dir)
    finally:
        server.stop()
    assert {"keyfob.db", "master.key", "audit-checkpoint.json"} <= set(files)
    assert {"keyfob.db-wal", "keyfob.db-shm"} & set(files), files
    assert {name: mode for name, mode in files.items() if mode & 0o077} == {}
    assert stat.S_IMODE(settings.data_dir.stat().st_mode) == 0o700
