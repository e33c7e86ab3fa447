"""Keep personal data out of logs: masked phone numbers, in our own log lines and in livekit's."""

from __future__ import annotations

import logging
import re
import unicodedata

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


# What may stand between two parts of one spoken or typed number: up to three characters that are neither
# letters nor digits (spaces, "-", ".", ",", "/", brackets, a zero-width space, ...), on one line. The phone
# parser skips every such character, so "98765/43210", "98,765,43,210" and "9.8.7.6.5.4.3.2.1.0" are numbers
# to it; a masker that knew only spaces and dashes let them through.
_PART = re.compile(r"\d|[^\W\d_]+|_|[^\w\n]{1,3}(?=[\w])|[^\w]+")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?")
_MIN_DIGITS = 6


def _is_number_word(word: str) -> bool:
    from gocare_voice.conversation.phone import NUMBER_WORDS

    return unicodedata.normalize("NFKC", word).lower() in NUMBER_WORDS


def mask_digit_runs(text: str) -> str:
    """Mask everything the phone parser would read as six or more digits inside free text (a transcript, a
    livekit log line): runs of digits and number words ("nine eight", "ninety eight", "double five") joined by
    the separators the parser skips. A run of digits keeps its last two; one with words becomes
    ``<number words>``. Left alone: digits glued to letters or ``_`` (ids like ``AJ_1234567``, ``v1.8.9``) and
    IPv4 addresses with an optional port. Filler words between the parts ("nine um eight ...") end a run."""
    from gocare_voice.conversation.phone import spoken_to_dial_string

    out: list[str] = []
    run: list[str] = []  # the parts of the current run, separators included
    pending: list[str] = []  # separators seen after the run's last number part
    glued = False  # the run touches a letter or "_" directly: an identifier, not a number
    has_word = False

    def flush() -> None:
        nonlocal run, glued, has_word
        if run:
            chunk = "".join(run)
            digits = spoken_to_dial_string(chunk).lstrip("+")
            if glued or len(digits) < _MIN_DIGITS or _IPV4.fullmatch(chunk):
                out.append(chunk)
            elif has_word:
                out.append("<number words>")
            else:
                out.append("*" * (len(digits) - 2) + digits[-2:])
        out.extend(pending)
        run, glued, has_word = [], False, False
        pending.clear()

    previous = ""
    for match in _PART.finditer(text):
        part = match.group(0)
        is_digit = len(part) == 1 and part.isdecimal()
        is_word = part[0].isalpha() and _is_number_word(part)
        if is_digit or is_word:
            if run:
                run.extend(pending)
                pending.clear()
            elif is_digit and (previous[-1:].isalpha() or previous == "_"):
                glued = True
            run.append(part)
            has_word = has_word or is_word
        elif (run and not pending and part[0].isalpha()) or part == "_":
            if run and run[-1].isdecimal():
                glued = True  # "1234567abc": digits glued to a word
            flush()
            out.append(part)
        elif run and not part[0].isalnum() and part != "_" and len(part) <= 3 and "\n" not in part:
            pending.append(part)
        else:
            flush()
            out.append(part)
        previous = part
    flush()
    return "".join(out)


_FOR_TEXT = re.compile(r"(for text: ).*?(?=, retrying in |$)", re.DOTALL)
_BODY = re.compile(r"(, )?body=.*?(?=, retrying in |$)", re.DOTALL)
_SECRET_LIKE = re.compile(r"(?<![\w-])(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[\w-]{24,}(?:\.[\w-]{8,}){0,2}")


def scrub_provider_text(text: str) -> str:
    """A provider's error as livekit words it, without what the provider sent back. Bodies go (a provider
    that echoes the request or the key would put it in the log), the reply text a TTS failed to speak goes
    (``failed to synthesize speech: no audio frames were pushed for text: ...``), and key- or token-like
    strings (24+ letters and digits) become ``<redacted>``."""
    text = _FOR_TEXT.sub(r"\1<text omitted>", text)
    text = _BODY.sub("", text)
    return _SECRET_LIKE.sub("<redacted>", text)


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
        masked = scrub_provider_text(mask_digit_runs(message))
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
