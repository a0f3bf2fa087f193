"""Every setting is documented in docs/configuration.md under its environment variable."""

from __future__ import annotations

import pytest

from keyfob.settings import Settings
from tests.support.docs import CONFIGURATION_DOC

FIELDS = sorted(Settings.model_fields)


def test_there_are_settings_to_document() -> None:
    assert {"data_dir", "database_url", "master_key", "max_body_bytes"} <= set(FIELDS)


@pytest.mark.parametrize("field", FIELDS)
def test_setting_is_documented(field: str) -> None:
    assert CONFIGURATION_DOC.is_file(), f"{CONFIGURATION_DOC} does not exist yet"
    variable = f"KEYFOB_{field.upper()}"
    assert f"`{variable}`" in CONFIGURATION_DOC.read_text(), f"{variable} is not documented"
