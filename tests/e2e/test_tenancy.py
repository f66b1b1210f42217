"""Tenants, scopes and budgets through the gateway with the official SDK."""

import asyncio
from pathlib import Path

import openai
import pytest
from aiohttp import web

from tests.stack import API_KEY, Stack

HI = [{"role": "user", "content": "hi"}]
# The scripted upstream answers "Hello! You said: hi" (4 completion tokens); at $250,000 per 1M output tokens
# every call costs exactly $1 and a max_tokens=4 estimate holds exactly $1.
DOLLAR_A_CALL = {"budget-model": {"input": 0.0, "cached_input": 0.0, "output": 250_000.0}}
ROUTE = [{"model": "budget-model", "provider": "openai", "upstream_model": "budget-model"}]


def _token(stack: Stack, scopes: list[str], tenant: str = "team", ttl: int = 0) -> str:
    def create() -> str:
        return stack.engine.tokens.create(tenant=tenant, scopes=scopes, name="", ttl_seconds=ttl)[1]

    return stack.call(create)


def test_scopes_are_enforced(stack: Stack) -> None:
    reader = _token(stack, ["ai:read"])
    writer = _token(stack, ["ai:write"])
    with openai.OpenAI(api_key=reader, base_url=stack.base_url, max_retries=0) as sdk:
        assert [m.id for m in sdk.models.list()]
        with pytest.raises(openai.PermissionDeniedError) as caught:
            sdk.chat.completions.create(model="gpt-4o", messages=HI)
        assert caught.value.code == "permission_denied"
    with openai.OpenAI(api_key=writer, base_url=stack.base_url, max_retries=0) as sdk:
        assert sdk.chat.completions.create(model="gpt-4o", messages=HI).choices
        with pytest.raises(openai.PermissionDeniedError):
            sdk.models.list()
    assert len(stack.upstream_requests("/v1/chat/completions")) == 1


def test_unknown_token_is_401(stack: Stack) -> None:
    with (
        openai.OpenAI(api_key="chitty_forged", base_url=stack.base_url, max_retries=0) as sdk,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        sdk.chat.completions.create(model="gpt-4o", messages=HI)
    assert caught.value.code == "invalid_api_key"
    assert stack.upstream_requests() == []


def test_passthrough_key_reaches_upstream_and_is_never_stored(stack: Stack, tmp_path: Path) -> None:
    secret = "sk-passthrough-never-stored-42"
    with openai.OpenAI(api_key=secret, base_url=stack.base_url, max_retries=0) as sdk:
        sdk.chat.completions.create(model="gpt-4o", messages=HI, temperature=0)
        sdk.embeddings.create(model="text-embedding-3-small", input="x", dimensions=8)
        with pytest.raises(openai.NotFoundError):
            sdk.chat.completions.create(model="nope", messages=HI)
    assert {r.headers["authorization"] for r in stack.upstream_requests()} == {f"Bearer {secret}"}
    stack.flush()
    store = stack.settings.data_dir / "store"
    for path in store.iterdir():
        assert secret.encode() not in path.read_bytes(), path


def test_budget_admits_what_it_can_pay_for_under_concurrency(stack_factory: object) -> None:
    stack = stack_factory(  # type: ignore[operator]
        tenancy={"default_tenant": "team", "default_monthly_usd": 10.0}, prices=DOLLAR_A_CALL, routes=ROUTE
    )

    async def one(sdk: openai.AsyncOpenAI) -> openai.RateLimitError | None:
        """None when the call is admitted, the refusal when it is not."""
        try:
            await sdk.chat.completions.create(model="budget-model", messages=HI, max_tokens=4)
        except openai.RateLimitError as err:
            return err
        return None

    async def burst() -> list[openai.RateLimitError | None]:
        async with openai.AsyncOpenAI(api_key=API_KEY, base_url=stack.base_url, max_retries=0) as sdk:
            return await asyncio.gather(*(one(sdk) for _ in range(50)))

    outcomes = asyncio.run(burst())
    refusals = [err for err in outcomes if err is not None]
    for err in refusals:
        assert err.code == "insufficient_quota"
        assert err.response.headers["x-should-retry"] == "false"
    stack.flush()
    spend = stack.call(lambda: stack.engine.budgets.spend("team"))
    assert outcomes.count(None) == 10
    assert len(refusals) == 40
    assert spend.spent_micros == 10_000_000
    assert spend.reserved_micros == 0
    records = [r for r in stack.engine.ledger.read() if r.tenant == "team"]
    assert sum(r.cost_micros for r in records) == spend.spent_micros
    assert sum(1 for r in records if r.error_reason == "BUDGET_EXCEEDED") == 40


def test_budget_headers_and_alerts(stack_factory: object) -> None:
    received: list[dict[str, object]] = []
    hooks = web.Application()

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response()

    hooks.router.add_post("/hook", hook)
    runner = web.AppRunner(hooks)
    stack = stack_factory(  # type: ignore[operator]
        tenancy={"default_tenant": "team", "default_monthly_usd": 4.0},
        prices=DOLLAR_A_CALL,
        routes=ROUTE,
    )

    async def start_hooks() -> str:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}/hook"

    url = stack.run(start_hooks())
    stack_factory.thread.stop_stack(stack)  # type: ignore[attr-defined]
    stack = stack_factory(  # type: ignore[operator]
        data_dir=stack.settings.data_dir,
        tenancy={"default_tenant": "team", "default_monthly_usd": 4.0},
        budgets={"webhook_url": url},
        prices=DOLLAR_A_CALL,
        routes=ROUTE,
    )
    remaining = []
    with openai.OpenAI(api_key=API_KEY, base_url=stack.base_url, max_retries=0) as sdk:
        for _ in range(4):
            raw = sdk.chat.completions.with_raw_response.create(model="budget-model", messages=HI, max_tokens=4)
            assert raw.headers["x-chittycan-tenant"] == "team"
            remaining.append(raw.headers["x-chittycan-budget-remaining"])
        with pytest.raises(openai.RateLimitError):
            sdk.chat.completions.create(model="budget-model", messages=HI, max_tokens=4)
    assert remaining == ["3.000000", "2.000000", "1.000000", "0.000000"]
    stack.run(stack.engine._accountant.close())
    stack.flush()
    alerts = [r.budget_alert_percent for r in stack.engine.ledger.read() if r.budget_alert_percent]
    assert alerts == [50, 100]
    assert [h["percent"] for h in received] == [50, 100]
    assert received[0]["tenant"] == "team"
    stack.run(runner.cleanup())


def test_stream_ends_cleanly_when_the_budget_runs_out(stack_factory: object) -> None:
    stack = stack_factory(  # type: ignore[operator]
        tenancy={"default_tenant": "team", "default_monthly_usd": 3.0},
        prices={"budget-model": {"input": 0.0, "output": 1_000_000.0}},  # $1 a token
        routes=ROUTE,
    )
    words = "one two three four five six seven eight nine ten"
    with openai.OpenAI(api_key=API_KEY, base_url=stack.base_url, max_retries=0) as sdk:
        stream = sdk.chat.completions.create(
            model="budget-model",
            messages=[{"role": "user", "content": words}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) == 4, "the chunk that passes the budget is the last one"
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    stack.flush()
    spend = stack.call(lambda: stack.engine.budgets.spend("team"))
    assert spend.spent_micros == 4_000_000, "overshoot is at most one chunk"
    assert spend.reserved_micros == 0


def test_tenant_header_only_when_allowed(stack_factory: object) -> None:
    for allowed, expected in ((False, None), (True, "blue")):
        stack = stack_factory(tenancy={"allow_tenant_header": allowed})  # type: ignore[operator]
        with openai.OpenAI(api_key=API_KEY, base_url=stack.base_url, max_retries=0) as sdk:
            raw = sdk.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=HI, extra_headers={"X-ChittyCan-Tenant": "blue"}
            )
        assert raw.headers.get("x-chittycan-tenant") == expected
