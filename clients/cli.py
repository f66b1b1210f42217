"""The `can` command: serve the gateway, manage its configuration (and, via the engine, tokens and metrics)."""

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import tomli_w

from clients import cli_auth, cli_registry, supervisor
from engine.config import ConfigError, config_path, load_raw, load_settings

_SECRET_KEYS = ("api_key", "master_key", "webhook_url")


def _mask(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if key in _SECRET_KEYS and isinstance(value, str) and value:
        return value[:4] + "…" + f"({len(value)} chars)" if len(value) > 8 else "****"
    return value


def _read_config_file(environ: Mapping[str, str]) -> dict[str, Any]:
    import tomllib

    path = config_path(environ)
    return tomllib.loads(path.read_text()) if path.exists() else {}


def _write_config_file(environ: Mapping[str, str], data: dict[str, Any]) -> str:
    path = config_path(environ)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(tomli_w.dumps(data).encode())
    os.replace(tmp, path)
    return str(path)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run engine and facade until Ctrl-C."""
    load_settings()  # refuse to start on an invalid configuration
    return supervisor.serve(args.workers, os.environ)


def cmd_config_dev(args: argparse.Namespace) -> int:
    """Switch dev mode on (every model to Ollama) or off, in the config file."""
    data = _read_config_file(os.environ)
    server = data.setdefault("server", {})
    if args.off:
        server["mode"] = "normal"
        message = "dev mode off: models route to their providers"
    elif args.use_local:
        server.update(mode="dev", dev_provider="local", dev_model=args.model or "local/smollm2-135m")
        server["dev_embedding_model"] = args.embedding_model or "local/minilm-l6"
        message = (
            f"dev mode on: every chat model is served by {server['dev_model']} and every embedding model by "
            f"{server['dev_embedding_model']}, inside the engine (offline, zero API cost)"
        )
    else:
        server.update(mode="dev", dev_provider="ollama", dev_model=args.model or "llama3")
        server["dev_embedding_model"] = args.embedding_model or ""
        if args.ollama_url:
            data.setdefault("providers", {}).setdefault("ollama", {})["base_url"] = args.ollama_url
        message = "dev mode on: every model is served by the local Ollama (zero API cost)"
    path = _write_config_file(os.environ, data)
    load_settings()  # refuse to leave an invalid file unnoticed
    print(f"{message}\nwrote {path}; restart the gateway (make run) to apply")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    """Print the effective configuration (defaults, file, environment), secrets masked."""
    raw = load_raw()
    settings = load_settings()
    for name, provider in settings.providers.items():
        table = raw["providers"][name]
        table["api_key"] = provider.api_key or ""
    print(tomli_w.dumps(_mask(raw)), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `can`."""
    parser = argparse.ArgumentParser(prog="can", description="ChittyCan gateway command line.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway (engine and facade) until Ctrl-C")
    serve.add_argument("--workers", type=int, default=1, help="engine and facade processes each (default 1)")
    serve.set_defaults(func=cmd_serve)

    config = commands.add_parser("config", help="gateway configuration").add_subparsers(dest="action", required=True)
    dev = config.add_parser("dev", help="switch local development mode on or off")
    dev.add_argument("--use-ollama", action="store_true", help="route every model to a local Ollama")
    dev.add_argument("--use-local", action="store_true", help="route every model to the models inside the engine")
    dev.add_argument("--embedding-model", help="the model embeddings are served with in dev mode")
    dev.add_argument("--ollama-url", help="Ollama base URL (default http://localhost:11434)")
    dev.add_argument("--model", help="the model every chat request is served with (default llama3 / local)")
    dev.add_argument("--off", action="store_true", help="switch dev mode off")
    dev.set_defaults(func=cmd_config_dev)
    show = config.add_parser("show", help="print the effective configuration, secrets masked")
    show.set_defaults(func=cmd_config_show)
    cli_auth.add_commands(commands)
    cli_registry.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `can`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is cmd_config_dev and [args.use_ollama, args.use_local, args.off].count(True) != 1:
        parser.error("config dev: say one of --use-ollama, --use-local or --off")
    try:
        sys.exit(args.func(args))
    except ConfigError as err:
        print(f"can: configuration error: {err}", file=sys.stderr)
        sys.exit(2)
