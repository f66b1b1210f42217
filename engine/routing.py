"""Model name -> ordered chain of provider routes (exact names first, then glob patterns, then fallbacks)."""

from dataclasses import dataclass
from fnmatch import fnmatchcase

import grpc

from engine.config import RouteSettings, Settings
from engine.errors import MODEL_NOT_FOUND, GatewayError

_CACHE_LIMIT = 4096
# A model name is printable ASCII of at most this many characters: it is echoed in X-ChittyCan-Model, in error
# messages and in the usage ledger, so a pattern route must not admit control characters or megabytes.
MAX_MODEL_NAME = 256


def model_name_shown(model: str) -> str:
    """`model` as messages, logs and the ledger may repeat it: control characters escaped, at most
    MAX_MODEL_NAME characters (then "...")."""
    if model.isascii() and model.isprintable() and len(model) <= MAX_MODEL_NAME:
        return model
    escaped = model[: MAX_MODEL_NAME + 1].encode("ascii", "backslashreplace").decode("ascii")
    escaped = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in escaped)
    return escaped[:MAX_MODEL_NAME] + ("..." if len(escaped) > MAX_MODEL_NAME else "")


@dataclass(frozen=True, slots=True)
class Route:
    """A resolved route: which provider answers a model name, under which upstream id and timeouts."""

    model: str
    provider: str
    upstream_model: str
    connect_timeout: float
    first_byte_timeout: float
    total_timeout: float


class Router:
    """Resolves model names against the configured route table; dev mode sends every model to one provider."""

    def __init__(self, settings: Settings) -> None:
        self._exact: dict[str, RouteSettings] = {}
        for r in settings.routes:  # the first route of a name wins: a deployment's routes come before the defaults
            if not _is_pattern(r.model):
                self._exact.setdefault(r.model, r)
        self._patterns = [r for r in settings.routes if _is_pattern(r.model)]
        self._dev = settings.mode == "dev"
        self._dev_provider = settings.dev_provider
        self._dev_model = settings.dev_model
        self._dev_embedding_model = settings.dev_embedding_model or settings.dev_model
        self._in_process = {name for name, p in settings.providers.items() if p.kind == "local"}
        self._cache: dict[tuple[str, bool], tuple[Route, ...]] = {}

    def resolve(self, model: str, *, embedding: bool = False) -> tuple[Route, ...]:
        """The primary route for `model` followed by its fallbacks; raises NOT_FOUND for an unknown model.

        `embedding` picks the dev-mode embedding model; outside dev mode it changes nothing.
        """
        key = (model, embedding)
        chain = self._cache.get(key)
        if chain is None:
            chain = self._build_chain(model, embedding)
            if len(self._cache) < _CACHE_LIMIT:  # pattern routes admit any name: bound what is remembered
                self._cache[key] = chain
        return chain

    def in_process(self, routes: tuple[Route, ...]) -> bool:
        """Whether every route of a chain is served inside the engine (no upstream, no key needed)."""
        return all(route.provider in self._in_process for route in routes)

    def dev_summary(self) -> str | None:
        """Where dev mode sends models, for the engine's first log line; None outside dev mode."""
        if not self._dev:
            return None
        chat = _dev_name(self._dev_provider, self._dev_model)
        embedding = _dev_name(self._dev_provider, self._dev_embedding_model)
        return f"DEV MODE: every chat model is served by {chat}, every embedding model by {embedding}"

    def models(self) -> list[str]:
        """Names clients can use (exact routes; patterns cannot be listed)."""
        return list(self._exact)

    def _build_chain(self, model: str, embedding: bool) -> tuple[Route, ...]:
        first = self._match(model) if model_name_shown(model) == model else None
        if first is None:
            raise GatewayError(
                grpc.StatusCode.NOT_FOUND,
                MODEL_NOT_FOUND,
                f"The model `{model_name_shown(model)}` does not exist or you do not have access to it.",
            )
        if self._dev and first.provider not in self._in_process:
            return (self._dev_route(self._dev_embedding_model if embedding else self._dev_model, first),)
        chain: list[Route] = []
        pending = [(model, first)]
        seen: set[str] = set()
        while pending:
            name, settings = pending.pop(0)
            if name in seen:
                continue
            seen.add(name)
            chain.append(_route(name, settings))
            pending.extend((f, s) for f in settings.fallbacks if (s := self._match(f)) is not None)
        return tuple(chain)

    def _match(self, model: str) -> RouteSettings | None:
        if (exact := self._exact.get(model)) is not None:
            return exact
        return next((r for r in self._patterns if fnmatchcase(model, r.model)), None)

    def _dev_route(self, upstream: str, settings: RouteSettings) -> Route:
        return Route(
            model=_dev_name(self._dev_provider, upstream),
            provider=self._dev_provider,
            upstream_model=upstream,
            connect_timeout=settings.connect_timeout,
            first_byte_timeout=settings.first_byte_timeout,
            total_timeout=settings.total_timeout,
        )


def _dev_name(provider: str, upstream: str) -> str:
    """`ollama/llama3`; a model already named after its provider (`local/smollm2-135m`) keeps its name."""
    return upstream if upstream.startswith(f"{provider}/") else f"{provider}/{upstream}"


def _is_pattern(model: str) -> bool:
    return any(ch in model for ch in "*?[")


def _route(name: str, settings: RouteSettings) -> Route:
    return Route(
        model=name,
        provider=settings.provider,
        upstream_model=settings.upstream_model.replace("{model}", name),
        connect_timeout=settings.connect_timeout,
        first_byte_timeout=settings.first_byte_timeout,
        total_timeout=settings.total_timeout,
    )
