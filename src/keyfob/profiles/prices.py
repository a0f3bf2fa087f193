"""Model prices: the bundled, versioned table plus the operator's overrides, and costs.

Prices are USD per million tokens (input, output, cached input), held as ``Decimal`` so a
price never drifts; costs are whole nano-dollars (1e-9 USD), rounded up, so budgets add
exactly. A dated model name (``gpt-4o-2024-08-06``) takes the price of its longest
listed prefix (``gpt-4o``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources

NANO_PER_USD = 1_000_000_000
# A price per million tokens, in USD, times this is nano-dollars per token.
_NANO_PER_TOKEN = Decimal(NANO_PER_USD) / Decimal(1_000_000)
MAX_PRICE = Decimal(100_000)
MAX_MODEL = 128


class BadPrice(ValueError):
    """A price row that cannot be used; ``line`` is its line number in an import (or 0)."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: Decimal
    output: Decimal
    cached: Decimal
    provider: str = ""
    source: str = "bundled"  # or "operator"

    def as_dict(self) -> dict[str, str]:
        return {
            "provider": self.provider,
            "input": str(self.input),
            "output": str(self.output),
            "cached": str(self.cached),
            "source": self.source,
        }


def cost_nano(price: Price, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> int:
    """What the tokens cost, in nano-dollars (rounded up); cached tokens are part of input."""
    cached = min(max(cached_tokens, 0), max(input_tokens, 0))
    total = (
        (max(input_tokens, 0) - cached) * price.input
        + cached * price.cached
        + max(output_tokens, 0) * price.output
    ) * _NANO_PER_TOKEN
    return math.ceil(total)


def usd(nano: int) -> float:
    """Nano-dollars as dollars, for display."""
    return nano / NANO_PER_USD


def parse_price(value: object, what: str, line: int = 0) -> Decimal:
    """A non-negative price of at most ``MAX_PRICE`` USD per million tokens."""
    try:
        price = Decimal(str(value).strip())
    except InvalidOperation:
        raise BadPrice(f"{what} is not a number", line) from None
    if not price.is_finite() or price < 0 or price > MAX_PRICE:
        raise BadPrice(f"{what} must be between 0 and {MAX_PRICE} USD per million tokens", line)
    return price


def check_model(name: str, line: int = 0) -> str:
    name = name.strip()
    if not name or len(name) > MAX_MODEL or any(c.isspace() or ord(c) < 32 for c in name):
        raise BadPrice(f"model must be 1-{MAX_MODEL} characters without spaces", line)
    return name


def parse_csv(text: str) -> dict[str, Price]:
    """Rows ``model,input,output[,cached[,provider]]`` (a header row is allowed); any bad
    row rejects the whole import, naming its line."""
    out: dict[str, Price] = {}
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or all(not cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        if number == 1 and row[0].strip().lower() == "model":
            continue
        if not 3 <= len(row) <= 5:
            raise BadPrice("expected model,input,output[,cached[,provider]]", number)
        model = check_model(row[0], number)
        if model in out:
            raise BadPrice(f"model {model} appears twice", number)
        inp = parse_price(row[1], "input", number)
        outp = parse_price(row[2], "output", number)
        cached = parse_price(row[3], "cached", number) if len(row) > 3 and row[3].strip() else inp
        provider = row[4].strip()[:32] if len(row) > 4 else ""
        out[model] = Price(inp, outp, cached, provider, "operator")
    if not out:
        raise BadPrice("no price rows")
    return out


def _bundled() -> tuple[str, dict[str, Price]]:
    text = resources.files("keyfob.profiles").joinpath("prices.json").read_text("utf-8")
    data = json.loads(text)
    models = {
        name: Price(Decimal(p["input"]), Decimal(p["output"]), Decimal(p["cached"]), p["provider"])
        for name, p in data["models"].items()
    }
    return str(data["version"]), models


BUNDLED_VERSION, BUNDLED = _bundled()


class PriceTable:
    """The bundled prices under the operator's overrides; ``version`` names both."""

    def __init__(
        self,
        overrides: Mapping[str, Price] | None = None,
        overrides_version: str | None = None,
        fallback: Price | None = None,
    ) -> None:
        self._prices = {**BUNDLED, **(overrides or {})}
        self.overrides = dict(overrides or {})
        self.fallback = fallback
        self.version = BUNDLED_VERSION + (f"+{overrides_version}" if overrides_version else "")

    def lookup(self, model: str | None) -> Price | None:
        """The price of ``model`` (exact, else its longest listed prefix), else the fallback."""
        if model:
            found = self._prices.get(model)
            if found is not None:
                return found
            best = ""
            for name in self._prices:
                if model.startswith(name + "-") and len(name) > len(best):
                    best = name
            if best:
                return self._prices[best]
        return self.fallback

    def rows(self) -> Iterable[tuple[str, Price]]:
        return sorted(self._prices.items())
