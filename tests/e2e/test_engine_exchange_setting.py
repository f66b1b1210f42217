"""CHITTYCAN_ENGINE_EXCHANGE: the facade's exchange stream framed on its loop (h2, the default) or by grpc.aio."""

import openai
import pytest
from aiohttp.test_utils import TestServer

from facade.__main__ import exchange_framed_here
from facade.app import create_app
from facade.state import ENGINE
from tests.stack import API_KEY, Stack


@pytest.mark.parametrize(
    ("value", "framed_here"), [(None, True), ("", True), ("h2", True), (" GRPC ", False), ("grpc", False)]
)
def test_the_setting_picks_the_exchange_pipe(value: str | None, framed_here: bool) -> None:
    environ = {} if value is None else {"CHITTYCAN_ENGINE_EXCHANGE": value}
    assert exchange_framed_here(environ) is framed_here


def test_an_unknown_value_stops_the_facade_with_a_clear_message() -> None:
    with pytest.raises(SystemExit, match="CHITTYCAN_ENGINE_EXCHANGE must be h2 or grpc, not 'http3'"):
        exchange_framed_here({"CHITTYCAN_ENGINE_EXCHANGE": "http3"})


@pytest.mark.parametrize("h2_exchange", [True, False])
async def test_the_facade_serves_on_either_pipe(stack: Stack, h2_exchange: bool) -> None:
    app = create_app(f"127.0.0.1:{stack.engine.port}", h2_exchange=h2_exchange)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        assert app[ENGINE].framed_here is h2_exchange
        async with openai.AsyncOpenAI(api_key=API_KEY, base_url=str(server.make_url("/v1")), max_retries=0) as sdk:
            chat = await sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
            assert chat.choices[0].message.content == "Hello! You said: hi"
            stream = await sdk.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "a b"}], stream=True
            )
            assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == (
                "Hello! You said: a b"
            )
    finally:
        await server.close()
