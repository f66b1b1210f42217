"""Explicit provider registry: dialect name -> constructor. No discovery at import time."""

from engine.config import ProviderSettings
from engine.providers.anthropic import AnthropicProvider
from engine.providers.base import Provider
from engine.providers.echo import EchoProvider
from engine.providers.local import LocalProvider
from engine.providers.openai import OpenAIProvider
from engine.upstream_http import UpstreamHttp


def build_provider(settings: ProviderSettings, http: UpstreamHttp) -> Provider:
    """Construct the provider a configured upstream's `kind` names."""
    if settings.kind == "openai":
        return OpenAIProvider(settings.name, settings.base_url, http)
    if settings.kind == "anthropic":
        return AnthropicProvider(settings.name, settings.base_url, http)
    if settings.kind == "echo":
        return EchoProvider(settings.name)
    if settings.kind == "local":
        return LocalProvider(settings.name, queue_size=settings.queue_size)
    raise ValueError(f"provider {settings.name}: unknown kind {settings.kind!r}")
