"""Cost arithmetic for every shipped price entry, overrides, and models without a price."""

import tomllib
from importlib import resources

import pytest

from chittycan.v1 import completion_pb2
from engine.pricing import PriceTable, load_prices
from engine.routing import Route

SHIPPED = tomllib.loads(resources.files("engine").joinpath("prices.toml").read_text())["prices"]


def _usage(prompt: int, completion: int, cached: int = 0, written: int = 0) -> completion_pb2.Usage:
    usage = completion_pb2.Usage(prompt_tokens=prompt, completion_tokens=completion, cache_creation_tokens=written)
    usage.prompt_tokens_details.cached_tokens = cached
    return usage


@pytest.mark.parametrize("model", sorted(k for k in SHIPPED if "*" not in k))
def test_every_shipped_price(model: str) -> None:
    entry = SHIPPED[model]
    route = Route(model, "someprovider", model, 1, 1, 1)
    cost = PriceTable(load_prices()).cost_micros(route, _usage(1_000_000, 1_000_000, cached=200_000))
    expected = 800_000 * entry["input"] + 200_000 * entry["cached_input"] + 1_000_000 * entry["output"]
    assert cost == round(expected)


def test_playbook_models_all_have_prices() -> None:
    table = PriceTable(load_prices())
    for model, provider, upstream in [
        ("gpt-4o", "openai", "gpt-4o"),
        ("gpt-4o-mini", "openai", "gpt-4o-mini"),
        ("o3-mini", "openai", "o3-mini"),
        ("text-embedding-3-small", "openai", "text-embedding-3-small"),
        ("claude-sonnet-4", "anthropic", "claude-sonnet-4-20250514"),
        ("llama-3-70b", "groq", "llama3-70b-8192"),
    ]:
        assert table.price(Route(model, provider, upstream, 1, 1, 1)) is not None, model


def test_gpt_4o_small_call_in_micro_usd() -> None:
    route = Route("gpt-4o", "openai", "gpt-4o", 1, 1, 1)
    # 12 prompt tokens at $2.50/M and 8 completion tokens at $10/M = 30 + 80 micro-USD.
    assert PriceTable(load_prices()).cost_micros(route, _usage(12, 8)) == 110


def test_anthropic_cache_writes_are_billed_at_the_write_price() -> None:
    route = Route("claude-sonnet-4", "anthropic", "claude-sonnet-4-20250514", 1, 1, 1)
    cost = PriceTable(load_prices()).cost_micros(route, _usage(1000, 0, cached=100, written=400))
    assert cost == round(500 * 3.0 + 100 * 0.3 + 400 * 3.75)


def test_unknown_model_has_no_cost_and_overrides_apply() -> None:
    route = Route("mystery", "openai", "mystery-1", 1, 1, 1)
    assert PriceTable(load_prices()).cost_micros(route, _usage(10, 10)) is None
    table = PriceTable(load_prices({"mystery": {"input": 1.0, "output": 2.0}}))
    assert table.cost_micros(route, _usage(10, 10)) == 30


def test_local_models_are_free() -> None:
    route = Route("ollama/llama3", "ollama", "llama3", 1, 1, 1)
    assert PriceTable(load_prices()).cost_micros(route, _usage(100, 100)) == 0
