"""Log format for every command: rich on a terminal, plain lines otherwise (servers, CI)."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: int = logging.INFO) -> None:
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
