"""Engine settings: packaged defaults, the deployment's TOML file, then environment overrides."""

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import Path
from typing import Any

CONFIG_ENV = "CHITTYCAN_CONFIG"
DEFAULT_CONFIG_FILE = "chittycan.toml"
# The master key the engine generates when none is configured, under the data directory (engine.admin writes it,
# clients.admin reads it).
MASTER_KEY_FILE = "master.key"

# Environment variable -> (table, key) it overrides.
_ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "CHITTYCAN_PORT": ("server", "port"),
    "CHITTYCAN_ENGINE_ADDR": ("server", "engine_addr"),
    "CHITTYCAN_ENGINE_UNIX": ("server", "engine_unix"),
    "CHITTYCAN_DATA_DIR": ("server", "data_dir"),
    "CHITTYCAN_MODE": ("server", "mode"),
    "CHITTYCAN_OPENAI_BASE_URL": ("providers", "openai", "base_url"),
    "CHITTYCAN_ANTHROPIC_BASE_URL": ("providers", "anthropic", "base_url"),
    "CHITTYCAN_GROQ_BASE_URL": ("providers", "groq", "base_url"),
    "OLLAMA_BASE_URL": ("providers", "ollama", "base_url"),
    "CHITTYCAN_CACHE_MODE": ("cache", "mode"),
    "CHITTY_TENANT_ID": ("tenancy", "default_tenant"),
    "CHITTY_BUDGET_MONTHLY_USD": ("tenancy", "default_monthly_usd"),
    "CHITTYCAN_MASTER_KEY": ("admin", "master_key"),
}
_INT_KEYS = {"port"}


class ConfigError(ValueError):
    """The configuration is invalid; the message names the setting."""


@dataclass(frozen=True)
class ProviderSettings:
    """One upstream: its dialect, base URL and where its key comes from."""

    name: str
    kind: str
    base_url: str
    api_key: str | None = field(repr=False)
    api_key_env: str
    passthrough: bool = True  # whether a caller's own provider key may be forwarded to this upstream
    queue_size: int = 8  # in-process models: calls that may wait for the model before 429


@dataclass(frozen=True)
class RouteSettings:
    """One route as configured."""

    model: str
    provider: str
    upstream_model: str
    connect_timeout: float
    first_byte_timeout: float
    total_timeout: float
    fallbacks: tuple[str, ...]


@dataclass(frozen=True)
class RetrySettings:
    """Retry policy before moving on to a route's fallbacks."""

    attempts: int
    backoff_initial: float
    backoff_max: float
    retry_after_max: float


@dataclass(frozen=True)
class CacheSettings:
    """Response cache policy and bounds."""

    mode: str
    ttl_seconds: int
    max_bytes: int
    shared: bool


@dataclass(frozen=True)
class TenancySettings:
    """Tenants, budgets and the admin credential."""

    default_tenant: str
    default_monthly_micros: int
    allow_tenant_header: bool
    alert_percents: tuple[int, ...]
    webhook_url: str = field(repr=False)
    default_completion_tokens: int
    hold_seconds: int
    master_key: str = field(repr=False)


@dataclass(frozen=True)
class Settings:
    """Everything the engine is built from."""

    port: int
    engine_addr: str
    engine_unix: str
    data_dir: Path
    mode: str
    dev_provider: str
    dev_model: str
    dev_embedding_model: str
    providers: Mapping[str, ProviderSettings]
    routes: tuple[RouteSettings, ...]
    retry: RetrySettings
    cache: CacheSettings
    tenancy: TenancySettings
    store_map_size: int
    ledger_retention_seconds: int
    ledger_max_records: int
    prices: Mapping[str, Any]
    raw: Mapping[str, Any] = field(repr=False)


def config_path(environ: Mapping[str, str]) -> Path:
    """The deployment's config file path (may not exist)."""
    return Path(environ.get(CONFIG_ENV, DEFAULT_CONFIG_FILE))


def load_raw(environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults merged with the deployment's file, then `overrides` (tables, as the file would have them), then
    environment variables, as plain TOML data."""
    env = os.environ if environ is None else environ
    data = tomllib.loads(resources.files("engine").joinpath("defaults.toml").read_text())
    path = config_path(env)
    if path.exists():
        try:
            user = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        _merge(data, user)
    if overrides:
        _merge(data, overrides)
    for var, keys in _ENV_OVERRIDES.items():
        if value := env.get(var):
            table = data
            for key in keys[:-1]:
                table = table.setdefault(key, {})
            table[keys[-1]] = int(value) if keys[-1] in _INT_KEYS else value
    return data


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> None:
    """Merge tables recursively; a deployment's `routes` list goes before the defaults, so it wins."""
    for key, value in override.items():
        if key == "routes":
            base["routes"] = list(value) + list(base.get("routes", []))
        elif isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def load_settings(environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Load and validate the settings."""
    env = os.environ if environ is None else environ
    raw = load_raw(env, overrides)
    server = raw["server"]
    providers = {name: _provider(name, table, env) for name, table in raw.get("providers", {}).items()}
    routes = tuple(_route(table, providers) for table in raw.get("routes", []))
    _check_routing(server, providers, routes)
    retry = raw.get("retry", {})
    return Settings(
        port=int(server["port"]),
        engine_addr=str(server["engine_addr"]),
        engine_unix=str(server.get("engine_unix", "")),
        data_dir=Path(server["data_dir"]),
        mode=str(server.get("mode", "normal")),
        dev_provider=str(server.get("dev_provider", "ollama")),
        dev_model=str(server.get("dev_model", "llama3")),
        dev_embedding_model=str(server.get("dev_embedding_model", "")),
        providers=providers,
        routes=routes,
        retry=RetrySettings(
            attempts=max(1, int(retry.get("attempts", 2))),
            backoff_initial=float(retry.get("backoff_initial", 0.1)),
            backoff_max=float(retry.get("backoff_max", 2.0)),
            retry_after_max=float(retry.get("retry_after_max", 10.0)),
        ),
        cache=_cache(raw.get("cache", {})),
        tenancy=_tenancy(raw),
        store_map_size=int(raw.get("store", {}).get("map_size_mb", 16384)) << 20,
        ledger_retention_seconds=int(float(raw.get("ledger", {}).get("retention_days", 62)) * 86400),
        ledger_max_records=int(raw.get("ledger", {}).get("max_records", 10_000_000)),
        prices=raw.get("prices", {}),
        raw=raw,
    )


def _tenancy(raw: Mapping[str, Any]) -> TenancySettings:
    tenancy, budgets = raw.get("tenancy", {}), raw.get("budgets", {})
    try:
        monthly = float(tenancy.get("default_monthly_usd") or 0)
    except ValueError as exc:
        raise ConfigError(f"CHITTY_BUDGET_MONTHLY_USD / tenancy.default_monthly_usd: {exc}") from exc
    return TenancySettings(
        default_tenant=str(tenancy.get("default_tenant", "")),
        default_monthly_micros=round(monthly * 1_000_000),
        allow_tenant_header=bool(tenancy.get("allow_tenant_header", False)),
        alert_percents=tuple(int(p) for p in budgets.get("alert_percents", (50, 80, 100))),
        webhook_url=str(budgets.get("webhook_url", "")),
        default_completion_tokens=int(budgets.get("default_completion_tokens", 1024)),
        hold_seconds=int(budgets.get("hold_seconds", 900)),
        master_key=str(raw.get("admin", {}).get("master_key", "")),
    )


def _cache(table: Mapping[str, Any]) -> CacheSettings:
    namespace = table.get("namespace", "tenant")
    if namespace not in {"tenant", "shared"}:
        raise ConfigError(f"cache.namespace must be tenant or shared, not {namespace!r}")
    return CacheSettings(
        mode=str(table.get("mode", "deterministic")),
        ttl_seconds=int(table.get("ttl_seconds", 86400)),
        max_bytes=int(float(table.get("max_mb", 256)) * (1 << 20)),
        shared=namespace == "shared",
    )


def _provider(name: str, table: Mapping[str, Any], env: Mapping[str, str]) -> ProviderSettings:
    kind = table.get("kind")
    if kind not in {"openai", "anthropic", "echo", "local"}:
        raise ConfigError(f"providers.{name}.kind must be openai, anthropic, echo or local, not {kind!r}")
    key_env = str(table.get("api_key_env", ""))
    api_key = table.get("api_key") or (env.get(key_env) if key_env else None) or None
    base_url = str(table.get("base_url", "")).rstrip("/")
    prefix = str(table.get("api_prefix", "")).rstrip("/")
    if prefix and not base_url.endswith(prefix):
        base_url += prefix
    return ProviderSettings(
        name,
        kind,
        base_url,
        api_key,
        key_env,
        bool(table.get("passthrough", True)),
        int(table.get("queue_size", 8)),
    )


def _route(table: Mapping[str, Any], providers: Mapping[str, ProviderSettings]) -> RouteSettings:
    model = table.get("model")
    provider = table.get("provider")
    if not model or provider not in providers:
        raise ConfigError(f"route {table!r}: needs a model and a provider among {sorted(providers)}")
    fallbacks = table.get("fallbacks", [])
    if not isinstance(fallbacks, list) or not all(isinstance(f, str) for f in fallbacks):
        raise ConfigError(f"route {model!r}: fallbacks must be a list of model names")
    total = float(table.get("timeout", 600.0))
    # A non-streamed answer's first byte is the whole answer, so by default only the total bounds it.
    timeouts = (float(table.get("connect_timeout", 10.0)), float(table.get("first_byte_timeout", total)), total)
    if min(timeouts) <= 0:
        raise ConfigError(f"route {model!r}: timeouts must be positive")
    return RouteSettings(
        model=str(model),
        provider=str(provider),
        upstream_model=str(table.get("upstream_model", "{model}")),
        connect_timeout=timeouts[0],
        first_byte_timeout=timeouts[1],
        total_timeout=total,
        fallbacks=tuple(fallbacks),
    )


def _check_routing(
    server: Mapping[str, Any], providers: Mapping[str, ProviderSettings], routes: tuple[RouteSettings, ...]
) -> None:
    """Refuse a mode, dev provider or fallback name that would otherwise be ignored or fail at request time."""
    mode = server.get("mode", "normal")
    if mode not in {"normal", "dev"}:
        raise ConfigError(f"server.mode (CHITTYCAN_MODE) must be normal or dev, not {mode!r}")
    if mode == "dev" and server.get("dev_provider", "ollama") not in providers:
        raise ConfigError(f"server.dev_provider must be one of {sorted(providers)}")
    for route in routes:
        for name in route.fallbacks:
            if not any(fnmatchcase(name, other.model) for other in routes):
                raise ConfigError(f"route {route.model!r}: fallback {name!r} matches no route")
