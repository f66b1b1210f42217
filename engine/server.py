"""Builds the engine's objects from Settings, wires them, and runs the grpc.aio server."""

import asyncio
import logging
import signal
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from chittycan.exchange_batches import MESSAGE_LIMIT
from chittycan.v1 import admin_pb2_grpc, gateway_pb2_grpc, observability_pb2_grpc
from engine.accounting import Accountant
from engine.admin import AdminServicer, master_key
from engine.auth import Authenticator
from engine.budgets import Budgets
from engine.cache import CachePolicy, ResponseCache
from engine.config import Settings
from engine.dispatch import Dispatcher
from engine.exchange import ExchangeServicer, add_exchange_to_server
from engine.gateway import Gateway
from engine.ledger import UsageLedger
from engine.metering import InFlight
from engine.metrics import LedgerMetrics
from engine.pricing import PriceTable, load_prices
from engine.provider_spans import traced
from engine.providers import build_provider
from engine.providers.local import LocalProvider
from engine.request_log import RequestLog
from engine.routing import Router
from engine.service import GatewayServicer
from engine.store import Store, StoreWriter
from engine.telemetry import Telemetry
from engine.tokens import TokenStore
from engine.upstream_http import UpstreamHttp
from engine.usage_service import UsageServicer

log = logging.getLogger(__name__)

# Keepalives keep the facade's long-lived channel healthy; large messages allow big embedding batches.
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MESSAGE_LIMIT),
    ("grpc.max_send_message_length", MESSAGE_LIMIT),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.so_reuseport", 1),
]


@dataclass
class Engine:
    """A running engine: its port and the parts that must be closed in order."""

    server: grpc.aio.Server
    port: int
    gateway: Gateway
    ledger: UsageLedger
    cache: ResponseCache
    health: health.HealthServicer
    exchange: ExchangeServicer
    budgets: Budgets
    tokens: TokenStore
    _accountant: Accountant
    _http: UpstreamHttp
    _writer: StoreWriter
    _store: Store
    telemetry: Telemetry
    _in_process: list[LocalProvider]
    _request_log: RequestLog | None

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking calls, let running ones finish, then flush the store and close everything."""
        self.health.enter_graceful_shutdown()
        self.exchange.drain()
        await self.server.stop(grace)
        await self._accountant.close()
        await self._writer.close()
        if self._request_log is not None:
            await asyncio.to_thread(self._request_log.close)
        await self._http.close()
        for provider in self._in_process:
            await asyncio.to_thread(provider.close)
        self._store.close()
        await self.telemetry.shutdown()


async def start_engine(
    settings: Settings, *, telemetry: Telemetry | None = None, request_log: RequestLog | None = None
) -> Engine:
    """Build and start an engine listening on `settings.engine_addr` (port 0 picks a free port); tracing as the
    OTEL_* variables say unless `telemetry` is given; one line per request to `request_log` if given."""
    router = Router(settings)
    if (dev := router.dev_summary()) is not None:
        log.warning("%s (switch off with `can config dev --off`)", dev)
    telemetry = telemetry or Telemetry.from_env()
    store = Store(settings.data_dir, map_size=settings.store_map_size)
    writer = StoreWriter(store)
    writer.start()
    http = UpstreamHttp()
    built = {name: build_provider(p, http) for name, p in settings.providers.items()}
    providers = {name: traced(provider, telemetry) for name, provider in built.items()}
    in_process = [p for p in built.values() if isinstance(p, LocalProvider)]
    ledger = UsageLedger(
        store,
        writer,
        retention_seconds=settings.ledger_retention_seconds,
        max_records=settings.ledger_max_records,
        request_log=request_log,
    )
    cache = ResponseCache(store, writer, ttl_seconds=settings.cache.ttl_seconds, max_bytes=settings.cache.max_bytes)
    tenancy = settings.tenancy
    tokens = TokenStore(store)
    budgets = Budgets(store, alert_percents=tenancy.alert_percents, hold_seconds=tenancy.hold_seconds)
    if tenancy.default_tenant and tenancy.default_monthly_micros:
        await asyncio.to_thread(budgets.set_budget, tenancy.default_tenant, tenancy.default_monthly_micros)
    prices = PriceTable(load_prices(settings.prices))
    accountant = Accountant(
        budgets,
        prices,
        default_completion_tokens=tenancy.default_completion_tokens,
        webhook_url=tenancy.webhook_url,
        http=http,
    )
    in_flight = InFlight()
    gateway = Gateway(
        router=router,
        dispatcher=Dispatcher(providers, settings.providers, settings.retry),
        authenticator=Authenticator(
            tokens, default_tenant=tenancy.default_tenant, allow_tenant_header=tenancy.allow_tenant_header
        ),
        cache=cache,
        policy=CachePolicy(settings.cache.mode),
        prices=prices,
        accountant=accountant,
        ledger=ledger,
        in_flight=in_flight,
        shared_cache=settings.cache.shared,
    )
    # Without a trace backend the interceptor would only cost time on every call.
    interceptors = [telemetry.interceptor()] if telemetry.enabled else []
    server = grpc.aio.server(options=GRPC_OPTIONS, interceptors=interceptors)
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(GatewayServicer(gateway), server)
    exchange = ExchangeServicer(gateway, telemetry)
    add_exchange_to_server(exchange, server)
    key = master_key(tenancy.master_key, settings.data_dir)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(tokens, budgets, key), server)
    metrics = LedgerMetrics(ledger, in_flight=lambda: in_flight.count)
    observability_pb2_grpc.add_UsageServiceServicer_to_server(UsageServicer(ledger, metrics, key), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(settings.engine_addr)
    if settings.engine_unix:
        server.add_insecure_port(f"unix:{settings.engine_unix}")
    await server.start()
    for service in ("", "chittycan.v1.GatewayService", "chittycan.v1.UsageService"):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    log.info("engine listening on %s (port %d), mode %s", settings.engine_addr, port, settings.mode)
    return Engine(
        server,
        port,
        gateway,
        ledger,
        cache,
        health_servicer,
        exchange,
        budgets,
        tokens,
        accountant,
        http,
        writer,
        store,
        telemetry,
        in_process,
        request_log,
    )


async def run(settings: Settings, request_log: RequestLog | None = None) -> None:
    """Serve until SIGINT/SIGTERM, then shut down cleanly."""
    engine = await start_engine(settings, request_log=request_log)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("engine shutting down")
    await engine.stop()
