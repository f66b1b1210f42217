"""Price table and cost arithmetic: integer micro-USD from token counts."""

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from importlib import resources
from typing import Any

from chittycan.v1 import completion_pb2
from engine.routing import Route


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens. Tokens x USD-per-million is exactly micro-USD."""

    input: float
    cached_input: float
    output: float
    cache_write: float

    def cost_micros(self, usage: completion_pb2.Usage) -> int:
        """Cost of one call: uncached input, cached input, cache writes and output, rounded to the micro-USD."""
        cached = usage.prompt_tokens_details.cached_tokens
        written = usage.cache_creation_tokens
        uncached = max(0, usage.prompt_tokens - cached - written)
        total = (
            uncached * self.input
            + cached * self.cached_input
            + written * self.cache_write
            + usage.completion_tokens * self.output
        )
        return round(total)


def load_prices(overrides: Mapping[str, Any] | None = None) -> dict[str, Price]:
    """The shipped table with a deployment's `[prices]` entries merged over it."""
    table: dict[str, Any] = tomllib.loads(resources.files("engine").joinpath("prices.toml").read_text())["prices"]
    for name, entry in (overrides or {}).items():
        table[name] = {**table.get(name, {}), **entry}
    return {name: _price(name, entry) for name, entry in table.items()}


def _price(name: str, entry: Mapping[str, Any]) -> Price:
    try:
        input_price = float(entry["input"])
        output_price = float(entry["output"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"prices.{name}: needs numeric input and output prices") from exc
    cached = float(entry.get("cached_input", input_price))
    return Price(input_price, cached, output_price, float(entry.get("cache_write", input_price)))


class PriceTable:
    """Looks a route up by `provider/upstream model`, upstream model id, then route name; globs last."""

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self._exact = {k: v for k, v in prices.items() if not any(c in k for c in "*?[")}
        self._patterns = [(k, v) for k, v in prices.items() if k not in self._exact]

    def price(self, route: Route) -> Price | None:
        """The price of `route`, or None when no entry matches (cost unknown)."""
        names = (f"{route.provider}/{route.upstream_model}", route.upstream_model, route.model)
        for name in names:
            if (price := self._exact.get(name)) is not None:
                return price
        for pattern, price in self._patterns:
            if any(fnmatchcase(name, pattern) for name in names):
                return price
        return None

    def cost_micros(self, route: Route, usage: completion_pb2.Usage) -> int | None:
        """Cost of a call on `route`, or None when the model has no price."""
        price = self.price(route)
        return None if price is None else price.cost_micros(usage)
