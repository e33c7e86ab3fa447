"""A scripted OpenAI-compatible chat server on 127.0.0.1, for tests and benchmarks.

Real HTTP (aiohttp, in its own thread and event loop, so it serves sync and async tests alike), speaking
``POST /v1/chat/completions`` both streaming (SSE ``chat.completion.chunk``s, with ``delta.tool_calls``) and
non-streaming. No model: the test scripts the answers with rules, first match wins::

    server.script(
        Rule(user=r"nine eight", reply=Reply(tool_calls=[ToolCall("verify_mobile_number", {"mobile_number": "..."})])),
        Rule(tool_output="verified", reply=Reply(text="Thanks!")),
    )

Every request is recorded (``server.requests``) so a test can assert on what the agent sent: the system
instructions, the tools offered, the messages. Other scripted servers (Deepgram, ``/v1/audio/speech``) live
beside this one in tests/scripted/ and share the thread runner below.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

Matcher = Callable[["ChatRequest"], bool]


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)

    @property
    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass(frozen=True)
class Reply:
    """What the "model" answers: text, tool calls, or an HTTP error (``status`` >= 400)."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    status: int = 200
    error: str = "scripted error"
    delay: float = 0.0
    chunk_words: int = 3


@dataclass
class Rule:
    """Matches a request; all given conditions must hold.

    ``user``: regex searched in the last user message, and only when the last message *is* the user's (so
    a rule for the user's words does not fire again on the follow-up request after a tool call).
    ``tool_output``: regex searched in the last message when it is a tool result (``tool_name`` narrows it).
    ``system``: regex searched in the system/developer instructions. ``when``: any predicate.
    ``times``: how many requests the rule may answer (None = unlimited).
    """

    reply: Reply
    user: str | None = None
    tool_output: str | None = None
    tool_name: str | None = None
    system: str | None = None
    when: Matcher | None = None
    times: int | None = None
    used: int = 0

    def matches(self, request: ChatRequest) -> bool:
        if self.times is not None and self.used >= self.times:
            return False
        if self.user is not None:
            if request.last_role != "user" or not re.search(self.user, request.last_user_text, re.I | re.S):
                return False
        if self.tool_output is not None or self.tool_name is not None:
            if request.last_role != "tool":
                return False
            if self.tool_output is not None and not re.search(self.tool_output, request.last_tool_output, re.I | re.S):
                return False
            if self.tool_name is not None and request.last_tool_name != self.tool_name:
                return False
        if self.system is not None and not re.search(self.system, request.system_text, re.I | re.S):
            return False
        if self.when is not None and not self.when(request):
            return False
        return True


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") in ("text", None)
        )
    return ""


@dataclass
class ChatRequest:
    """One recorded request, with the views tests need."""

    body: dict[str, Any]
    path: str
    headers: dict[str, str]
    received_at: float

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages = self.body.get("messages")
        return messages if isinstance(messages, list) else []

    @property
    def model(self) -> str | None:
        return self.body.get("model")

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def system_text(self) -> str:
        return "\n".join(
            _content_text(m.get("content")) for m in self.messages if m.get("role") in ("system", "developer")
        )

    @property
    def tool_names(self) -> list[str]:
        names = []
        for tool in self.body.get("tools") or []:
            function = tool.get("function") if isinstance(tool, dict) else None
            if isinstance(function, dict) and function.get("name"):
                names.append(function["name"])
        return names

    @property
    def last_role(self) -> str | None:
        return self.messages[-1].get("role") if self.messages else None

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return _content_text(message.get("content"))
        return ""

    @property
    def last_tool_output(self) -> str:
        if self.last_role != "tool":
            return ""
        return _content_text(self.messages[-1].get("content"))

    @property
    def last_tool_name(self) -> str | None:
        """Name of the function whose result is the last message (looked up by tool_call_id)."""
        if self.last_role != "tool":
            return None
        call_id = self.messages[-1].get("tool_call_id")
        for message in reversed(self.messages):
            for call in message.get("tool_calls") or []:
                if call.get("id") == call_id:
                    return (call.get("function") or {}).get("name")
        return None


_Server = TypeVar("_Server", bound="ThreadedServer")


class ThreadedServer:
    """``start()`` / ``stop()`` and the context manager, for every scripted server whose aiohttp app runs in
    a ``_ThreadRunner`` (``self._runner``)."""

    _runner: _ThreadRunner

    def start(self: _Server) -> _Server:
        self._runner.start()
        return self

    def stop(self) -> None:
        self._runner.stop()

    def __enter__(self: _Server) -> _Server:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class ScriptedOpenAIServer(ThreadedServer):
    """``start()`` / ``stop()`` (or a context manager); ``base_url`` ends with ``/v1``."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, default_reply: Reply | None = None) -> None:
        self.host = host
        self.port = port
        self.default_reply = default_reply or Reply(text="Okay.")
        self.rules: list[Rule] = []
        self.requests: list[ChatRequest] = []
        self.answered_at: list[float] = []
        """``time.time()`` of each answer's first byte (after its ``delay``): the benchmark's LLM first token."""
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._runner = _ThreadRunner(self._make_app, host=host, port=port)

    # --- scripting -------------------------------------------------------------------------------
    def script(self, *rules: Rule) -> ScriptedOpenAIServer:
        with self._lock:
            self.rules.extend(rules)
        return self

    def reset(self) -> None:
        with self._lock:
            self.rules.clear()
            self.requests.clear()
            self.answered_at.clear()

    def chat_requests(self) -> list[ChatRequest]:
        with self._lock:
            return list(self.requests)

    def _choose(self, request: ChatRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            for rule in self.rules:
                if rule.matches(request):
                    rule.used += 1
                    return rule.reply
            return self.default_reply

    # --- lifecycle -------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"{self._runner.url}/v1"

    # --- HTTP ------------------------------------------------------------------------------------
    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        return app

    async def _models(self, _request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "scripted", "object": "model"}]})

    async def _chat(self, http: web.Request) -> web.StreamResponse:
        try:
            body = await http.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"error": {"message": "invalid JSON", "type": "invalid_request_error"}}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": {"message": "body must be an object"}}, status=400)
        request = ChatRequest(body=body, path=http.path, headers=dict(http.headers), received_at=time.time())
        reply = self._choose(request)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.status >= 400:
            return web.json_response(
                {"error": {"message": reply.error, "type": "scripted_error", "code": reply.status}}, status=reply.status
            )
        with self._lock:
            self.answered_at.append(time.time())
        completion_id = f"chatcmpl-scripted-{next(self._ids)}"
        model = str(body.get("model") or "scripted")
        if not request.stream:
            return web.json_response(self._completion(completion_id, model, reply))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(http)
        for chunk in self._chunks(completion_id, model, reply, include_usage=bool((body.get("stream_options") or {}).get("include_usage"))):
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _completion(self, completion_id: str, model: str, reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if reply.tool_calls:
            message["tool_calls"] = [
                {"id": f"call_{completion_id}_{i}", "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
                for i, c in enumerate(reply.tool_calls)
            ]
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": max(1, len(reply.text.split())), "total_tokens": 10 + max(1, len(reply.text.split()))},
        }

    def _chunks(self, completion_id: str, model: str, reply: Reply, *, include_usage: bool) -> list[dict[str, Any]]:
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        chunks = [chunk({"role": "assistant", "content": ""})]
        words = reply.text.split(" ") if reply.text else []
        step = max(1, reply.chunk_words)
        for start in range(0, len(words), step):
            piece = " ".join(words[start : start + step])
            if start + step < len(words):
                piece += " "
            chunks.append(chunk({"content": piece}))
        for index, call in enumerate(reply.tool_calls):
            arguments = call.arguments_json
            half = len(arguments) // 2
            chunks.append(chunk({"tool_calls": [{
                "index": index, "id": f"call_{completion_id}_{index}", "type": "function",
                "function": {"name": call.name, "arguments": arguments[:half]},
            }]}))
            chunks.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments[half:]}}]}))
        chunks.append(chunk({}, "tool_calls" if reply.tool_calls else "stop"))
        if include_usage:
            usage_chunk = chunk({})
            usage_chunk["choices"] = []
            usage_chunk["usage"] = {"prompt_tokens": 10, "completion_tokens": max(1, len(words)), "total_tokens": 10 + max(1, len(words))}
            chunks.append(usage_chunk)
        return chunks


class _ThreadRunner:
    """Runs an aiohttp application on its own event loop in a daemon thread (reusable by other servers)."""

    def __init__(self, make_app: Callable[[], web.Application], *, host: str, port: int) -> None:
        self._make_app = make_app
        self._host = host
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    def start(self) -> None:
        if self._thread is not None:
            return
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                # a request still held by a scripted delay is cut off at stop (aiohttp waits 60 s for it by
                # default, and stop() gave up on the thread after 10 s: each such test's teardown took 10 s)
                runner = web.AppRunner(self._make_app(), access_log=None, shutdown_timeout=0.5)
                loop.run_until_complete(runner.setup())
                site = web.TCPSite(runner, self._host, self._port)
                loop.run_until_complete(site.start())
                self._runner = runner
                port = runner.addresses[0][1]
                self.url = f"http://{self._host}:{port}"
            except BaseException as error:  # noqa: BLE001 - reported to the starting thread
                failure.append(error)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="scripted-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("scripted server did not start within 10 s")
        if failure:
            self._thread = None
            raise failure[0]

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None
