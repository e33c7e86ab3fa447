"""Keep secrets and personal data out of logs: masked phone numbers and tokens."""

from __future__ import annotations

import logging
import re

_DIGIT = re.compile(r"\d")


def mask_phone(number: str | None) -> str:
    """``+919876543210`` -> ``+91******3210``: enough to recognise, not enough to call."""
    if not number:
        return "<none>"
    digits = _DIGIT.findall(number)
    if len(digits) <= 4:
        return "*" * len(digits)
    keep_head = 2 if number.startswith("+") and len(digits) > 8 else 0
    head = ("+" + "".join(digits[:keep_head])) if keep_head else ""
    return head + "*" * (len(digits) - keep_head - 4) + "".join(digits[-4:])


def mask_secret(value: str | None) -> str:
    """A token or key -> ``<redacted, N chars>``; never any of its characters."""
    if not value:
        return "<none>"
    return f"<redacted, {len(value)} chars>"


_DIGIT_RUN = re.compile(r"\+?\d[\d\s().-]{4,}\d")


def mask_digit_runs(text: str) -> str:
    """Mask anything that looks like a phone number inside free text (a transcript): runs of six or more
    digits, with the separators people say or type between them, keep only their last two digits."""

    def _mask(match: re.Match[str]) -> str:
        digits = _DIGIT.findall(match.group(0))
        if len(digits) < 6:
            return match.group(0)
        return "*" * (len(digits) - 2) + "".join(digits[-2:])

    return _DIGIT_RUN.sub(_mask, text)


class PiiLogFilter(logging.Filter):
    """livekit-agents logs what the user said (final transcripts, at DEBUG) in ``lk.pii.*`` extra fields,
    and its JSON log format writes every extra field out. A spoken mobile number would land in the logs:
    this filter masks digit runs in those fields (and in the message itself) before any handler sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in list(record.__dict__.items()):
            if key.startswith("lk.pii") and isinstance(value, str):
                setattr(record, key, mask_digit_runs(value))
        if isinstance(record.msg, str) and not record.args:
            record.msg = mask_digit_runs(record.msg)
        return True


def install_pii_log_filter(logger_names: tuple[str, ...] = ("livekit.agents", "livekit.plugins")) -> None:
    """Idempotent: once per process (the worker's main process and each job process)."""
    for name in logger_names:
        target = logging.getLogger(name)
        if not any(isinstance(f, PiiLogFilter) for f in target.filters):
            target.addFilter(PiiLogFilter())
