"""First light: the official SDK through the gateway to the scripted upstream."""

import openai

from tests.stack import Stack


def test_chat_roundtrip(client: openai.OpenAI, stack: Stack) -> None:
    res = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Say hello"}])
    assert res.choices[0].message.content
    assert res.id.startswith("chatcmpl-")
    assert stack.upstream_requests("/v1/chat/completions")[-1].json["model"] == "gpt-4o"
