"""32 concurrent streams through AsyncOpenAI."""

import asyncio

import openai

from conftest import MODEL


async def test_32_concurrent_streams(server):
    async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60) as c:

        async def one(i):
            stream = await c.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": f"request {i}"}], max_tokens=16,
                stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
            role, finish, usage, text = None, None, None, ""
            async for chunk in stream:
                if chunk.usage:
                    usage = chunk.usage
                for choice in chunk.choices:
                    role = role or choice.delta.role
                    text += choice.delta.content or ""
                    finish = choice.finish_reason or finish
            return role, finish, usage, text

        results = await asyncio.gather(*(one(i) for i in range(32)))
    for role, finish, usage, _ in results:
        assert role == "assistant"
        assert finish == "length"
        assert usage.completion_tokens == 16
