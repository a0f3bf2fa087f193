"""``keyfob usage`` and ``keyfob prices`` against the real app in-process."""

from __future__ import annotations

import json
from pathlib import Path

from keyfob.vault import Context

from .conftest import Cli, RealKeyfob


def _metered(real: RealKeyfob, model: str, output: int, cost: float) -> None:
    """A metered ``proxy.request`` record, as the proxy writes one (no upstream here)."""
    details = {
        "lease_id": "l1",
        "grant_id": "g1",
        "bytes_up": 10,
        "bytes_down": 90,
        "usage": {
            "model": model,
            "input_tokens": 20,
            "output_tokens": output,
            "cached_tokens": 0,
            "cost_usd": cost,
            "reported": True,
        },
    }

    async def write() -> None:
        async with real.vault.core.write() as tx:
            ctx = Context(actor="agent:a1")
            await real.vault.core.record(
                tx, ctx, "proxy.request", "secret_set:openai/p/x", details=details
            )

    real.run(write())


def test_usage_table_and_json(real_cli: Cli, real: RealKeyfob) -> None:
    _metered(real, "gpt-4o-mini", 5, 0.000006)
    _metered(real, "gpt-4o", 7, 0.00012)

    table = real_cli("usage", "--group-by", "model")
    shown = json.loads(real_cli("usage", "--group-by", "model", "--json").stdout)

    assert table.exit_code == 0, table.stdout
    assert "gpt-4o-mini" in table.stdout
    assert "total" in table.stdout
    assert [g["key"] for g in shown["groups"]] == ["gpt-4o", "gpt-4o-mini"]
    assert shown["total"]["requests"] == 2
    assert shown["total"]["output_tokens"] == 12
    assert shown["total"]["bytes"] == 200


def test_prices_set_and_list(real_cli: Cli) -> None:
    done = real_cli("prices", "set", "my-model", "--input", "1.5", "--output", "6")
    shown = json.loads(real_cli("prices", "list", "--json").stdout)

    assert done.exit_code == 0, done.stdout
    mine = [p for p in shown["prices"] if p["model"] == "my-model"]
    assert mine == [
        {
            "model": "my-model",
            "provider": "",
            "input": "1.5",
            "output": "6",
            "cached": "1.5",
            "source": "operator",
        }
    ]
    assert "+" in shown["version"]  # the bundled version, plus the overrides' stamp
    assert any(p["model"] == "gpt-4o-mini" and p["source"] == "bundled" for p in shown["prices"])


def test_price_import_with_a_bad_row_is_rejected_whole(real_cli: Cli, tmp_path: Path) -> None:
    table = tmp_path / "prices.csv"
    table.write_text("model,input,output\nfirst-model,1,2\nsecond-model,cheap,2\n")

    refused = real_cli("prices", "import", str(table))
    shown = json.loads(real_cli("prices", "list", "--json").stdout)

    assert refused.exit_code != 0
    assert "line 3" in refused.stdout + refused.stderr
    assert not any(p["model"] == "first-model" for p in shown["prices"])

    table.write_text("model,input,output,cached\nfirst-model,1,2,0.5\n")
    assert real_cli("prices", "import", str(table)).exit_code == 0
    shown = json.loads(real_cli("prices", "list", "--json").stdout)
    assert any(p["model"] == "first-model" and p["cached"] == "0.5" for p in shown["prices"])
