"""Route table, fallback chains and dev mode (Router), and the routing settings they are built from (config)."""

from pathlib import Path
from typing import Any

import grpc
import pytest

from engine.config import ConfigError, Settings, load_settings
from engine.errors import GatewayError
from engine.routing import Route, Router


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No config file, no keys: only the packaged defaults."""
    return {"CHITTYCAN_CONFIG": str(tmp_path / "absent.toml")}


def _settings(env: dict[str, str], **overrides: Any) -> Settings:
    return load_settings(env, overrides)


def _chain(router: Router, model: str) -> list[tuple[str, str, str]]:
    return [(r.model, r.provider, r.upstream_model) for r in router.resolve(model)]


@pytest.mark.parametrize(
    ("model", "provider", "upstream"),
    [
        ("gpt-4o", "openai", "gpt-4o"),
        ("gpt-4o-mini", "openai", "gpt-4o-mini"),
        ("o3-mini", "openai", "o3-mini"),
        ("text-embedding-3-small", "openai", "text-embedding-3-small"),
        ("claude-sonnet-4", "anthropic", "claude-sonnet-4-20250514"),
        ("llama-3-70b", "groq", "llama3-70b-8192"),
        ("gpt-4.1-mini", "openai", "gpt-4.1-mini"),
        ("o1-preview", "openai", "o1-preview"),
        ("text-embedding-3-large", "openai", "text-embedding-3-large"),
        ("claude-3-5-haiku-latest", "anthropic", "claude-3-5-haiku-latest"),
    ],
)
def test_default_table(env: dict[str, str], model: str, provider: str, upstream: str) -> None:
    assert _chain(Router(_settings(env)), model) == [(model, provider, upstream)]


@pytest.mark.parametrize("model", ["llama-3-8b", "mistral", "o", "GPT-4O", ""])
def test_unknown_model_is_not_found_naming_it(env: dict[str, str], model: str) -> None:
    with pytest.raises(GatewayError) as caught:
        Router(_settings(env)).resolve(model)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert caught.value.param is None, "OpenAI names no param for an unknown model in a chat or embeddings call"
    assert f"`{model}`" in caught.value.message


def test_models_lists_exact_routes_once_in_order(env: dict[str, str]) -> None:
    router = Router(_settings(env, routes=[{"model": "gpt-4o", "provider": "openai", "upstream_model": "x"}]))
    models = router.models()
    assert models[:6] == [
        "gpt-4o",
        "gpt-4o-mini",
        "o3-mini",
        "text-embedding-3-small",
        "claude-sonnet-4",
        "llama-3-70b",
    ]
    assert len(models) == len(set(models))
    assert not any("*" in m or "[" in m for m in models)


def test_deployment_routes_win_over_defaults(env: dict[str, str]) -> None:
    router = Router(
        _settings(
            env,
            routes=[
                {"model": "claude-sonnet-4", "provider": "openai", "upstream_model": "gpt-4o"},
                {"model": "claude-*", "provider": "groq", "upstream_model": "llama3-70b-8192"},
            ],
        )
    )
    assert _chain(router, "claude-sonnet-4") == [("claude-sonnet-4", "openai", "gpt-4o")]
    assert _chain(router, "claude-3-opus") == [("claude-3-opus", "groq", "llama3-70b-8192")]


def test_route_settings_reach_the_route(env: dict[str, str]) -> None:
    table = {"model": "slow", "provider": "openai", "timeout": 30, "connect_timeout": 2, "first_byte_timeout": 5}
    [route] = Router(_settings(env, routes=[table])).resolve("slow")
    assert route == Route("slow", "openai", "slow", connect_timeout=2, first_byte_timeout=5, total_timeout=30)


def test_first_byte_timeout_defaults_to_the_total(env: dict[str, str]) -> None:
    [route] = Router(_settings(env, routes=[{"model": "m", "provider": "openai", "timeout": 42}])).resolve("m")
    assert (route.connect_timeout, route.first_byte_timeout, route.total_timeout) == (10, 42, 42)
    [default] = Router(_settings(env)).resolve("gpt-4o")
    assert default.first_byte_timeout == default.total_timeout == 600


def test_fallback_chain_is_ordered_transitive_and_loop_free(env: dict[str, str]) -> None:
    routes = [
        {"model": "a", "provider": "openai", "upstream_model": "gpt-4o", "fallbacks": ["b", "claude-3-haiku"]},
        {"model": "b", "provider": "anthropic", "upstream_model": "claude-x", "fallbacks": ["c", "a"]},
        {"model": "c", "provider": "groq", "upstream_model": "llama", "fallbacks": ["b"]},
    ]
    assert _chain(Router(_settings(env, routes=routes)), "a") == [
        ("a", "openai", "gpt-4o"),
        ("b", "anthropic", "claude-x"),
        ("claude-3-haiku", "anthropic", "claude-3-haiku"),
        ("c", "groq", "llama"),
    ]


def test_fallback_keeps_its_own_timeouts(env: dict[str, str]) -> None:
    routes = [
        {"model": "a", "provider": "openai", "timeout": 5, "fallbacks": ["b"]},
        {"model": "b", "provider": "openai", "timeout": 50},
    ]
    assert [r.total_timeout for r in Router(_settings(env, routes=routes)).resolve("a")] == [5, 50]


def test_dev_mode_sends_every_known_model_to_the_dev_provider(env: dict[str, str]) -> None:
    routes = [{"model": "quick", "provider": "openai", "first_byte_timeout": 3, "fallbacks": ["gpt-4o-mini"]}]
    router = Router(_settings(env, server={"mode": "dev"}, routes=routes))
    for model in ("gpt-4o", "claude-sonnet-4", "llama-3-70b", "text-embedding-3-small", "claude-3-opus", "quick"):
        assert _chain(router, model) == [("ollama/llama3", "ollama", "llama3")], model
    assert router.resolve("quick")[0].first_byte_timeout == 3, "the matched route's timeouts still apply"
    with pytest.raises(GatewayError):
        router.resolve("not-a-model")


def test_dev_mode_from_the_environment(env: dict[str, str]) -> None:
    settings = _settings({**env, "CHITTYCAN_MODE": "dev", "OLLAMA_BASE_URL": "http://ollama:11434"})
    assert settings.mode == "dev"
    assert settings.providers["ollama"].base_url == "http://ollama:11434/v1"
    assert _chain(Router(settings), "gpt-4o") == [("ollama/llama3", "ollama", "llama3")]


def test_dev_provider_and_model_are_configurable(env: dict[str, str]) -> None:
    settings = _settings(env, server={"mode": "dev", "dev_provider": "groq", "dev_model": "llama3-8b-8192"})
    assert _chain(Router(settings), "gpt-4o") == [("groq/llama3-8b-8192", "groq", "llama3-8b-8192")]


@pytest.mark.parametrize(
    ("var", "provider", "value", "expected"),
    [
        ("CHITTYCAN_OPENAI_BASE_URL", "openai", "http://o/v1/", "http://o/v1"),
        ("CHITTYCAN_ANTHROPIC_BASE_URL", "anthropic", "http://a:1", "http://a:1"),
        ("CHITTYCAN_GROQ_BASE_URL", "groq", "http://g/openai/v1", "http://g/openai/v1"),
        ("OLLAMA_BASE_URL", "ollama", "http://ollama:11434", "http://ollama:11434/v1"),
        ("OLLAMA_BASE_URL", "ollama", "http://ollama:11434/v1/", "http://ollama:11434/v1"),
    ],
)
def test_base_url_environment_overrides(
    env: dict[str, str], var: str, provider: str, value: str, expected: str
) -> None:
    assert _settings({**env, var: value}).providers[provider].base_url == expected


def test_default_base_urls_and_keys(env: dict[str, str]) -> None:
    providers = _settings({**env, "ANTHROPIC_API_KEY": "sk-ant-1", "GROQ_API_KEY": "gsk-1"}).providers
    assert providers["anthropic"].base_url == "https://api.anthropic.com"
    assert providers["groq"].base_url == "https://api.groq.com/openai/v1"
    assert providers["ollama"].base_url == "http://localhost:11434/v1"
    assert (providers["anthropic"].api_key, providers["groq"].api_key) == ("sk-ant-1", "gsk-1")
    assert providers["openai"].api_key is None
    assert providers["ollama"].api_key is None
    assert all(providers[name].passthrough for name in ("openai", "anthropic", "groq"))
    assert not providers["ollama"].passthrough, "a caller's provider key never goes to the local Ollama"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"server": {"mode": "devv"}}, "server.mode"),
        ({"server": {"mode": "dev", "dev_provider": "nowhere"}}, "dev_provider"),
        ({"routes": [{"model": "a", "provider": "openai", "fallbacks": ["nothing-like-it"]}]}, "fallback"),
        ({"routes": [{"model": "a", "provider": "openai", "fallbacks": "gpt-4o"}]}, "list"),
        ({"routes": [{"model": "a", "provider": "openai", "first_byte_timeout": 0}]}, "positive"),
        ({"routes": [{"model": "a", "provider": "nowhere"}]}, "provider"),
    ],
)
def test_invalid_routing_settings_are_refused(env: dict[str, str], overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _settings(env, **overrides)


def test_a_deployment_file_adds_routes_and_providers(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    path.write_text(
        '[providers.local]\nkind = "openai"\nbase_url = "http://vllm:8000/v1"\napi_key_env = "VLLM_KEY"\n'
        '[[routes]]\nmodel = "house-*"\nprovider = "local"\nupstream_model = "{model}-awq"\nfallbacks = ["gpt-4o"]\n'
    )
    settings = _settings({**env, "VLLM_KEY": "k"})
    assert settings.providers["local"].api_key == "k"
    assert _chain(Router(settings), "house-7b") == [
        ("house-7b", "local", "house-7b-awq"),
        ("gpt-4o", "openai", "gpt-4o"),
    ]
