"""Charging calls to tenants: estimate, reserve, settle or release against budgets, and announce alerts."""

import asyncio
import logging
from collections.abc import Iterable

import orjson

from chittycan.v1 import completion_pb2
from engine.budgets import Budgets, Hold, Settled
from engine.pricing import PriceTable
from engine.routing import Route
from engine.upstream_http import Timeouts, UpstreamHttp, UpstreamHttpError

log = logging.getLogger(__name__)
_UNPRICED_ESTIMATE_MICROS = 10_000  # a call on a model without a price holds one cent
_JSON = {"Content-Type": "application/json"}
_WEBHOOK_TIMEOUTS = Timeouts(connect=10.0, read=30.0, total=30.0)


def estimate_prompt_tokens(messages: Iterable[completion_pb2.Message]) -> int:
    """A cheap prompt size estimate (4 characters a token, plus per-message overhead)."""
    chars = 0
    count = 0
    for message in messages:
        count += 1
        if message.WhichOneof("content") == "text":
            chars += len(message.text)
        else:
            chars += sum(len(p.text.text) for p in message.parts.parts)
    return chars // 4 + 4 * count


class Accountant:
    """Budget holds for calls in flight. Tenants without a budget cost one LMDB read per call and nothing else."""

    def __init__(
        self,
        budgets: Budgets,
        prices: PriceTable,
        *,
        default_completion_tokens: int,
        webhook_url: str = "",
        http: UpstreamHttp | None = None,
    ) -> None:
        self._budgets = budgets
        self._prices = prices
        self._default_completion_tokens = default_completion_tokens
        self._webhook_url = webhook_url
        self._http = http
        self._webhooks: set[asyncio.Task[None]] = set()

    def estimate_micros(self, route: Route, prompt_tokens: int, completion_tokens: int) -> int:
        """What a call may cost: priced usage, or a flat amount when the model has no price."""
        usage = completion_pb2.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        cost = self._prices.cost_micros(route, usage)
        return _UNPRICED_ESTIMATE_MICROS if cost is None else max(1, cost)

    async def admit(self, tenant: str, route: Route, request: completion_pb2.ChatRequest | None) -> Hold | None:
        """Reserve the call's estimate; None for tenants without a budget. Raises BUDGET_EXCEEDED."""
        if self._budgets.budget(tenant) is None:
            return None
        prompt = estimate_prompt_tokens(request.messages) if request is not None else 0
        completion = 0
        if request is not None:
            limit = request.max_completion_tokens or request.max_tokens or self._default_completion_tokens
            completion = limit * max(1, request.n)
        estimate = self.estimate_micros(route, prompt, completion)
        return await asyncio.to_thread(self._budgets.reserve, tenant, estimate)

    async def settle(self, hold: Hold, cost_micros: int) -> Settled:
        """Charge the real cost; log and post any alert threshold crossed."""
        settled = await asyncio.to_thread(self._budgets.settle, hold, cost_micros)
        if settled.alert_percent:
            self._alert(hold, settled)
        return settled

    async def release(self, hold: Hold) -> None:
        """Drop a hold; survives the caller's cancellation so a hold never outlives its call."""
        await asyncio.shield(asyncio.to_thread(self._budgets.release, hold))

    def _alert(self, hold: Hold, settled: Settled) -> None:
        spent = hold.budget_micros - settled.remaining_micros
        log.warning(
            "budget alert: tenant %s reached %d%% of its %s budget for %s",
            hold.tenant,
            settled.alert_percent,
            f"${hold.budget_micros / 1e6:.2f}",
            hold.month,
        )
        if self._webhook_url and self._http is not None:
            body = {
                "tenant": hold.tenant,
                "month": hold.month,
                "percent": settled.alert_percent,
                "budget_usd": hold.budget_micros / 1e6,
                "spent_usd": spent / 1e6,
            }
            task = asyncio.create_task(self._post(body))
            self._webhooks.add(task)
            task.add_done_callback(self._webhooks.discard)

    async def _post(self, body: dict[str, object]) -> None:
        assert self._http is not None
        try:
            async with self._http.post(self._webhook_url, orjson.dumps(body), _JSON, _WEBHOOK_TIMEOUTS) as resp:
                await resp.read()
                if resp.status >= 300:
                    log.warning("budget alert webhook answered HTTP %d", resp.status)
        except (UpstreamHttpError, TimeoutError) as exc:
            log.warning("budget alert webhook failed: %s", type(exc).__name__)

    async def close(self) -> None:
        """Wait for alert webhooks still being posted."""
        if self._webhooks:
            await asyncio.gather(*self._webhooks, return_exceptions=True)
