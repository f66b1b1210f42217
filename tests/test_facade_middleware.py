"""The facade's error middleware around a handler that fails: OpenAI's 500 body naming the request's own id."""

from aiohttp import web
from aiohttp.test_utils import TestClient

from facade import calls
from facade.app import create_app


async def _fails(request: web.Request) -> web.Response:
    calls.request_id(request)  # the id a handler would send to the engine
    raise RuntimeError("a bug")


async def test_an_internal_error_names_the_request_id_the_handler_used(aiohttp_client: object) -> None:
    app = create_app("127.0.0.1:1")
    app.router.add_get("/v1/fails", _fails)
    client: TestClient = await aiohttp_client(app)  # type: ignore[operator]
    response = await client.get("/v1/fails")
    assert response.status == 500
    body = await response.json()
    assert body["error"]["type"] == "server_error"
    assert response.headers["x-request-id"] in body["error"]["message"]
    assert "a bug" not in body["error"]["message"]
