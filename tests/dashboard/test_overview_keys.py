"""The overview names the master key provider (never a key or a PIN)."""

from __future__ import annotations

from .conftest import Ui


async def test_the_overview_names_the_master_key_provider(ui: Ui):
    page = await ui.get("/ui/")

    assert page.status_code == 200
    assert "Master key provider <strong>file</strong>." in page.text
