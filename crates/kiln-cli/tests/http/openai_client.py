"""Drives a `kiln serve --http-listen` with OpenAI's Python client; prints a JSON report.

Usage: openai_client.py HOST:PORT CONFIG_JSON, where CONFIG_JSON has "prompts" (completion
prompts), "max_tokens", "chat" (a user message) and "concurrent" (how many streams at once, the
prompts in turn). Greedy throughout. The Rust test (tests/http.rs) compares the report with
`kiln generate`.
"""

import asyncio
import json
import sys

import openai
from openai import AsyncOpenAI, OpenAI

addr, config = sys.argv[1], json.loads(sys.argv[2])
base = f"http://{addr}/v1"
client = OpenAI(base_url=base, api_key="unused", max_retries=0)
n = config["max_tokens"]
out = {"models": [m.id for m in client.models.list()]}
model = out["models"][0]
messages = [{"role": "user", "content": config["chat"]}]

r = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=n)
out["chat"] = {
    "content": r.choices[0].message.content,
    "finish_reason": r.choices[0].finish_reason,
    "usage": {"prompt_tokens": r.usage.prompt_tokens, "completion_tokens": r.usage.completion_tokens},
}

content, finish, usage = "", None, None
stream = client.chat.completions.create(
    model=model, messages=messages, temperature=0, max_tokens=n, stream=True, stream_options={"include_usage": True}
)
for chunk in stream:
    for c in chunk.choices:
        content += c.delta.content or ""
        finish = c.finish_reason or finish
    if chunk.usage is not None:
        usage = {"prompt_tokens": chunk.usage.prompt_tokens, "completion_tokens": chunk.usage.completion_tokens}
out["chat_stream"] = {"content": content, "finish_reason": finish, "usage": usage}

prompt = config["prompts"][0]
r = client.completions.create(model=model, prompt=prompt, temperature=0, max_tokens=n)
out["completion"] = {"text": r.choices[0].text, "finish_reason": r.choices[0].finish_reason}
text = "".join(c.choices[0].text for c in client.completions.create(
    model=model, prompt=prompt, temperature=0, max_tokens=n, stream=True) if c.choices)
out["completion_stream"] = {"text": text}

errors = {}
try:
    client.chat.completions.create(model=model, messages=messages, max_tokens=-1)
except openai.BadRequestError as e:
    errors["negative_max_tokens"] = {"status": e.status_code, "param": e.param, "message": e.message}
try:
    client.get("/nope", cast_to=object)
except openai.NotFoundError as e:
    errors["unknown_route"] = {"status": e.status_code, "message": e.message}
out["errors"] = errors


async def concurrent():
    aclient = AsyncOpenAI(base_url=base, api_key="unused", max_retries=0)

    async def one(i):
        text, finish, usage = "", None, None
        stream = await aclient.completions.create(
            model=model, prompt=config["prompts"][i % len(config["prompts"])], temperature=0, max_tokens=n,
            stream=True, stream_options={"include_usage": True})
        async for chunk in stream:
            for c in chunk.choices:
                text += c.text
                finish = c.finish_reason or finish
            if chunk.usage is not None:
                usage = {"prompt_tokens": chunk.usage.prompt_tokens, "completion_tokens": chunk.usage.completion_tokens}
        return {"text": text, "finish_reason": finish, "usage": usage}

    return await asyncio.gather(*(one(i) for i in range(config["concurrent"])))


out["concurrent"] = asyncio.run(concurrent())
print(json.dumps(out))
