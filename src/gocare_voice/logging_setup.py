"""Log format for every command: rich on a terminal, plain lines otherwise (servers, CI)."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: int = logging.INFO) -> None:
    quiet_livekit_noise()
    root = logging.getLogger()
    if getattr(root, "_gocare_configured", False):
        root.setLevel(level)
        return
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(rich_tracebacks=False, show_path=False)
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
