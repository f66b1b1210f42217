"""`can serve --workers 2` (what `make run` starts) as a real process tree: the official SDK through it, then a
clean shutdown that leaves every request in the ledger and every request line on stdout."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import orjson

from engine.ledger import UsageLedger
from engine.store import Store, StoreWriter
from tests.processes import start_gateway_processes

KEY = "sk-test-can-serve"


def _ask(sdk: openai.OpenAI, text: str) -> tuple[str, str]:
    raw = sdk.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": text}], temperature=0
    )
    return raw.parse().choices[0].message.content or "", raw.headers["x-chittycan-cache"]


def test_can_serve_workers_answer_and_shut_down_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with (
        start_gateway_processes(data_dir, serve_workers=2) as gateway,
        openai.OpenAI(api_key=KEY, base_url=gateway.base_url, max_retries=0) as sdk,
    ):
        assert _ask(sdk, "first") == ("Hello! You said: first", "MISS")
        with ThreadPoolExecutor(8) as pool:  # spread over both facade/engine pairs
            answers = list(pool.map(lambda i: _ask(sdk, f"q{i}")[0], range(40)))
        assert answers == [f"Hello! You said: q{i}" for i in range(40)]
        assert _ask(sdk, "first") == ("Hello! You said: first", "HIT")  # whichever engine answers
        stream = sdk.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "streamed"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hello! You said: streamed"
        vectors = sdk.embeddings.create(model="text-embedding-3-small", input="x", dimensions=8)
        assert len(vectors.data[0].embedding) == 8
    store = Store(data_dir)
    records = list(UsageLedger(store, StoreWriter(store)).read())
    store.close()
    assert len(records) == 44
    lines = [orjson.loads(line) for line in (data_dir / "logs" / "can-serve.out").read_bytes().splitlines()]
    assert sorted(line["request_id"] for line in lines) == sorted(r.request_id for r in records)
