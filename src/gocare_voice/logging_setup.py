"""Log format for every command: rich on a terminal, plain lines otherwise (servers, CI), or one JSON object
per line (``GOCARE_LOG_FORMAT=json``).

The JSON lines have the field names of livekit-agents' own JSON format (``livekit/agents/cli/log.py``), which
``gocare worker start`` writes for the worker and its job processes: ``level``, ``name`` (the logger),
``message``, ``timestamp`` (ISO 8601, UTC), ``pid``, ``exc_info`` when there is one, and every ``extra``
field of the record (``room``, ``job_id``, ...). One log pipeline can then read the token service and the
worker alike. Redaction (``redact.PiiLogFilter``) runs on the handler before either format.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from typing import Any

_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime",
    "color_message",  # uvicorn's copy of the message with terminal colour codes
}


def _plain(value: Any) -> Any:
    """What orjson cannot write becomes its ``str()``."""
    return str(value)


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        import orjson

        line: dict[str, Any] = {
            "level": record.levelname,
            "name": record.name,
            "message": record.getMessage(),
            "timestamp": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(),
            "pid": record.process,
        }
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc_info"] = record.exc_text
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_") and key not in line:
                line[key] = value
        return orjson.dumps(line, default=_plain).decode()


def setup_logging(level: int = logging.INFO, *, log_format: str = "text") -> None:
    quiet_livekit_noise()
    root = logging.getLogger()
    if getattr(root, "_gocare_configured", False):
        root.setLevel(level)
        return
    if log_format == "json":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonLineFormatter())
    elif sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(rich_tracebacks=False, show_path=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    from gocare_voice.redact import PiiLogFilter

    handler.addFilter(PiiLogFilter())
    root.handlers[:] = [handler]
    root.setLevel(level)
    root._gocare_configured = True  # type: ignore[attr-defined]


class _LivekitNoise(logging.Filter):
    """livekit-agents warns "no request_id provided for TTS" on every synthesis by a speech server that sends
    no ``x-request-id`` header (most OpenAI-compatible servers but OpenAI's own): one warning per voice
    upload and per spoken reply, about nothing anyone can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("no request_id provided for TTS")


def quiet_livekit_noise() -> None:
    """Install the filter on livekit-agents' logger once (a logger filter sees its records before any
    handler, whoever configured the handlers)."""
    lk_logger = logging.getLogger("livekit.agents")
    if not any(isinstance(f, _LivekitNoise) for f in lk_logger.filters):
        lk_logger.addFilter(_LivekitNoise())
