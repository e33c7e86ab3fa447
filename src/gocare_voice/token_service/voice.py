"""``POST /voice/upload?room=ROOM``: a recorded message in, transcript + reply + spoken reply out.

The body is read here, from ``request.stream()``, and parsed with python-multipart's streaming parser instead
of FastAPI's ``UploadFile``: the size limit must hold *while reading* (Starlette's form parser would first
spool a 1 GB body to a temporary file), and the file should never touch the disk. A declared
Content-Length over the limit is refused before a byte of the body is read; a body without one (chunked)
is refused as soon as the running count passes the limit.

Caller authentication and the rate limit come first (``require_caller``), so an anonymous client cannot make
the service read 25 MB. Every bad input is a 4xx ``{"error", "detail"}``; a provider failure is a 502/503/504
that still carries what the earlier stages produced (see ``voice_upload.pipeline``).
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from gocare_voice.audio import ACCEPTED_FORMATS, AudioError
from gocare_voice.settings import Settings
from gocare_voice.token_service.auth import Caller
from gocare_voice.token_service.deps import authorize_room, require_caller
from gocare_voice.token_service.errors import ApiError
from gocare_voice.token_service.metrics import NoMetrics, ServiceMetrics
from gocare_voice.token_service.responses import json_response
from gocare_voice.token_service.schemas import upload_openapi
from gocare_voice.token_service.validation import check_room
from gocare_voice.voice_upload import UploadResult, VoiceUploadPipeline

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

log = logging.getLogger("gocare.voice_upload")

FILE_FIELD = "file"
MULTIPART_OVERHEAD = 64 * 1024
"""Room for boundaries, part headers and small extra fields on top of the file itself."""
MAX_OTHER_FIELD_BYTES = 16 * 1024



def human_size(size: int) -> str:
    """``26214400`` -> ``25 MB``, ``20000`` -> ``20 KB``: what a user can read, at most one decimal."""
    for unit, factor in (("MB", 1024 * 1024), ("KB", 1024)):
        if size >= factor:
            return f"{size / factor:.1f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{size} bytes"


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, "too_large",
        f"The upload is larger than the limit of {human_size(limit)}. Please send a shorter recording.",
    )


class _UploadCollector:
    """python-multipart callbacks that keep the ``file`` part in memory, counting as they go."""

    def __init__(self, *, max_file_bytes: int) -> None:
        self.max_file_bytes = max_file_bytes
        self.file: bytearray | None = None
        self.file_parts = 0
        self.filename: str | None = None
        self.content_type: str | None = None
        self.finished = False
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, bytes] = {}
        self._in_file = False
        self._in_other_file = False
        self._other_bytes = 0
        self.other_file_fields: list[str] = []

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._header_field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._in_file = False
        self._in_other_file = False

    def _header_end(self) -> None:
        self._headers[bytes(self._header_field).decode("latin-1").strip().lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if name == FILE_FIELD:
            self.file_parts += 1
            if self.file_parts > 1:
                raise ApiError(422, "too_many_files", f"Send exactly one recording in the '{FILE_FIELD}' field.")
            self._in_file = True
            self.file = bytearray()
            filename = params.get(b"filename")
            self.filename = filename.decode("utf-8", "replace")[:200] if filename else None
            content_type = self._headers.get("content-type")
            self.content_type = content_type.decode("latin-1")[:100] if content_type else None
        elif b"filename" in params:
            # a file under another name: skipped (the body limit still bounds it), named in the error
            self._in_other_file = True
            if len(self.other_file_fields) < 5:
                self.other_file_fields.append(name[:64])

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            assert self.file is not None
            if len(self.file) + (end - start) > self.max_file_bytes:
                raise _too_large(self.max_file_bytes)
            self.file.extend(data[start:end])
        elif not self._in_other_file:
            self._other_bytes += end - start
            if self._other_bytes > MAX_OTHER_FIELD_BYTES:
                raise ApiError(
                    413, "too_large", f"Form fields other than '{FILE_FIELD}' may hold at most "
                    f"{MAX_OTHER_FIELD_BYTES} bytes."
                )

    def _part_end(self) -> None:
        self._in_file = False
        self._in_other_file = False

    def _end(self) -> None:
        self.finished = True


async def read_upload(request: Request, *, max_file_bytes: int) -> bytes:
    """The ``file`` field of a multipart/form-data body, refused with 413 as soon as it is too big."""
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data":
        raise ApiError(
            415, "unsupported_media_type",
            f"Send the recording as multipart/form-data with a field named '{FILE_FIELD}' ({ACCEPTED_FORMATS}).",
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "bad_multipart", "The multipart/form-data Content-Type has no boundary.")
    max_body = max_file_bytes + MULTIPART_OVERHEAD
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise ApiError(400, "bad_request", "Invalid Content-Length header.")
        if int(declared) > max_body:
            raise _too_large(max_file_bytes)
    collector = _UploadCollector(max_file_bytes=max_file_bytes)
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_body:
                raise _too_large(max_file_bytes)
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except FormParserError:
        raise ApiError(400, "bad_multipart", "The multipart/form-data body is malformed.") from None
    except ClientDisconnect:
        raise ApiError(400, "incomplete_upload", "The upload was interrupted before it finished.") from None
    if not collector.finished:
        raise ApiError(400, "incomplete_upload", "The multipart body ended before its closing boundary.")
    if collector.file is None:
        found = (
            f" (found a file in the field '{collector.other_file_fields[0]}')" if collector.other_file_fields else ""
        )
        raise ApiError(
            422, "missing_file", f"No recording found: send it in a multipart field named '{FILE_FIELD}'{found}."
        )
    return bytes(collector.file)


def _result_body(result: UploadResult) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ok": result.ok,
        "transcript": result.transcript,
        "reply": result.reply,
        "speech_audio": base64.b64encode(result.speech_audio).decode("ascii") if result.speech_audio else None,
        "speech_format": result.speech_format,
        "agent_notified": result.agent_notified,
        "room": result.room,
    }
    if result.failure is not None:
        body = {
            "error": result.failure.error,
            "detail": result.failure.detail,
            "stage": result.failure.stage,
            **body,
        }
    return body


def _json(description: str, model: str = "ErrorResponse") -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}}}


def build_voice_router(settings: Settings, metrics: ServiceMetrics | None = None) -> APIRouter:
    """The upload route with its pipeline; the pipeline's provider clients close with the app."""
    pipeline = VoiceUploadPipeline(settings=settings)
    recorder: ServiceMetrics = metrics if metrics is not None else NoMetrics()

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        try:
            await pipeline.audio.start()  # worker processes up before the first upload
        except Exception as error:  # noqa: BLE001 - they start on demand instead
            log.warning("audio workers did not start: %s", error)
        yield
        await pipeline.aclose()

    router = APIRouter(tags=["voice"], lifespan=lifespan)

    @router.post(
        "/voice/upload",
        summary="Recorded message -> transcript, reply and spoken reply",
        responses={
            200: _json("`{ok, transcript, reply, speech_audio (base64), speech_format, agent_notified, room}`",
                       "VoiceUploadResponse"),
            400: _json("malformed or interrupted multipart body"),
            401: _json("jwt mode: no or an invalid bearer token"),
            403: _json("jwt mode: `room` is not one of the caller's own rooms"),
            413: _json("file larger than GOCARE_UPLOAD_MAX_BYTES, or longer than GOCARE_UPLOAD_MAX_SECONDS"),
            415: _json("not multipart, not audio, or an unsupported codec"),
            422: _json("corrupt/truncated audio, no speech, missing file field, a decode past its time limit"),
            429: _json("rate limited"),
            502: _json("a provider failed; `stage` says which, earlier results are kept"),
            503: _json("a provider is not configured, or the signing keys cannot be fetched"),
            504: _json("a provider timed out; `stage` says which, earlier results are kept"),
        },
        openapi_extra=upload_openapi(limit_bytes=settings.upload_max_bytes),
    )
    async def voice_upload(request: Request, caller: Caller = Depends(require_caller)) -> Response:
        """Multipart field ``file`` (WebM/Opus, M4A/AAC, WAV, MP3 or OGG); optional query ``room``: the room
        whose agent should hear about the message."""
        room = check_room(request.query_params.get("room"), field="room", required=False)
        if room is not None:
            room = authorize_room(caller, room)  # nobody tells another user's agent what was "said"
        started = time.perf_counter()
        data = await read_upload(request, max_file_bytes=settings.upload_max_bytes)
        read_done = time.perf_counter()
        try:
            audio = await pipeline.audio.decode(
                data, max_seconds=settings.upload_max_seconds, timeout=settings.upload_decode_timeout
            )
        except AudioError as error:
            log.info("voice upload refused: %s (%d bytes)", error.code, len(data))
            recorder.upload_stage("decode", time.perf_counter() - read_done)
            recorder.upload_failed("decode", error.code)
            raise ApiError(error.status, error.code, error.message) from None
        decode_done = time.perf_counter()
        result = await pipeline.process(
            audio=audio, room=room, caller_name=caller.name, authenticated=caller.subject is not None
        )
        result.timings = {"read": read_done - started, "decode": decode_done - read_done, **result.timings}
        log.info(
            "voice upload: %d bytes %s/%s %.1f s -> %s%s, notified=%s, %s",
            len(data), audio.container, audio.codec, audio.duration,
            f"{result.failure.status} {result.failure.error}" if result.failure else "ok",
            f" at {result.failure.stage}" if result.failure else "",
            result.agent_notified,
            " ".join(f"{k}={v * 1000:.0f}ms" for k, v in result.timings.items()),
        )
        for stage, seconds in result.timings.items():
            recorder.upload_stage(stage, seconds)
        if result.failure is not None:
            recorder.upload_failed(result.failure.stage, result.failure.error)
            return json_response(result.failure.status, _result_body(result))
        return json_response(200, _result_body(result))

    return router
