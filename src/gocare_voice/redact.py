"""Keep personal data out of logs: masked phone numbers, in our own log lines and in livekit's."""

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


# digits with the separators people say or type between them; not inside words, IP addresses or versions
_DIGIT_RUN = re.compile(r"(?<![\w.:/])\+?\d[\d\s()-]{4,}\d(?![\w.:/])")
_DIGIT_WORD = r"(?:zero|oh|o|one|two|three|four|five|six|seven|eight|nine|double|triple|plus)"
_WORD_RUN = re.compile(rf"\b{_DIGIT_WORD}(?:[\s,.-]+{_DIGIT_WORD}){{5,}}\b", re.IGNORECASE)


def mask_digit_runs(text: str) -> str:
    """Mask anything that looks like a phone number inside free text (a transcript): runs of six or more
    digits, with the separators people say or type between them, keep only their last two digits; six or
    more number words in a row ("nine eight seven six five four ...") become ``<number words>``."""

    def _mask(match: re.Match[str]) -> str:
        digits = _DIGIT.findall(match.group(0))
        if len(digits) < 6:
            return match.group(0)
        return "*" * (len(digits) - 2) + "".join(digits[-2:])

    return _WORD_RUN.sub("<number words>", _DIGIT_RUN.sub(_mask, text))


class PiiLogFilter(logging.Filter):
    """livekit-agents logs what the user said (final transcripts, at DEBUG) in ``lk.pii.*`` extra fields,
    and its JSON log format writes every extra field out; plugins log transcripts in messages. A spoken
    mobile number would land in the logs: this filter masks number-like runs in those fields and in the
    formatted message before the record is written or sent to the parent process."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in list(record.__dict__.items()):
            if key.startswith("lk.pii") and isinstance(value, str):
                setattr(record, key, mask_digit_runs(value))
        if not record.name.startswith("livekit"):
            return True  # our own lines mask numbers themselves; uvicorn's carry addresses, not transcripts
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string is the logging module's to report
            return True
        masked = mask_digit_runs(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def install_pii_log_filter() -> None:
    """Put the filter on every handler of the root logger (a filter on a logger would miss its children).
    Idempotent; called in each process once its handlers exist: livekit-agents adds them before prewarm in
    job processes, and before the job runs in console mode."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, PiiLogFilter) for f in handler.filters):
            handler.addFilter(PiiLogFilter())
