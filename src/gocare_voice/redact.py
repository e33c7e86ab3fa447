"""Keep personal data out of logs: masked phone numbers, in our own log lines and in livekit's."""

from __future__ import annotations

import functools
import logging
import re
import unicodedata
from collections.abc import Sequence

_ANY_DIGIT = re.compile(r"\d")


def mask_phone(number: str | None) -> str:
    """``+919876543210`` -> ``+91******3210``: enough to recognise, not enough to call."""
    if not number:
        return "<none>"
    digits = _ANY_DIGIT.findall(number)
    if len(digits) <= 4:
        return "*" * len(digits)
    keep_head = 2 if number.startswith("+") and len(digits) > 8 else 0
    head = ("+" + "".join(digits[:keep_head])) if keep_head else ""
    return head + "*" * (len(digits) - keep_head - 4) + "".join(digits[-4:])


# The one masking function for every text that is kept or leaves the process (a stored turn, the memory
# summary, the webhook body and the export built from them, log lines, a transcript sent to an LLM).
#
# The text is cut into tokens: a digit (any script), a word, a separator, a break. What the phone parser
# (conversation/phone.py) reads as part of a number is a number token: a digit, or a word of ``NUMBER_WORDS``
# ("nine", "oh", "double", "ninety", "plus"). A *run* is number tokens joined by separators (up to five
# characters that are neither letters nor digits, on one line: spaces, "-", ".", ",", "/", "... ", brackets,
# a zero-width space; the parser skips every one of them) and by up to ``_MAX_FILLERS`` filler words ("um",
# "and", "then", "sorry", ...: a caller hesitating between groups; the parser skips them too). A run the
# parser would read as six or more digits is masked. Left alone: a word of letters and digits together
# (``AJ_1234567890``, ``v1``, ``1a2b3c``: an identifier) and an IPv4 address with an optional port.
_SUBTOKEN = re.compile(r"\d|[^\W\d_]+")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?")
_MIN_DIGITS = 6
_MAX_FILLERS = 3
_MAX_SEPARATOR = 5
_TOKEN = re.compile(r"\w+|[^\w\n]{1,%d}(?=\w)|[^\w]+" % _MAX_SEPARATOR)
FILLER_WORDS = frozenset({
    "um", "umm", "uh", "uhh", "uhm", "er", "erm", "ah", "eh", "hm", "hmm", "mm", "mhm",
    "and", "then", "so", "like", "okay", "ok", "yeah", "yes", "no", "sorry", "well", "wait", "actually",
    "i", "mean", "it", "its", "s", "is", "my", "number", "the", "rest", "next", "again", "that",
    "comma", "dash", "hyphen", "space", "dot", "stop",
})
"""Words a caller puts between the groups of a number; a run goes on over up to three of them in a row."""

_DIGIT, _NUMWORD, _FILLER, _WORD, _SEP, _BREAK = range(6)


@functools.lru_cache(maxsize=4096)
def _word_kind(word: str) -> int:
    """Cached: a transcript repeats its words, and the log filter sees every livekit line."""
    from gocare_voice.conversation.phone import NUMBER_WORDS

    folded = unicodedata.normalize("NFKC", word).lower()
    if folded in NUMBER_WORDS:
        return _NUMWORD
    return _FILLER if folded in FILLER_WORDS else _WORD


def _tokens(text: str, offset: int, owner: int, out: list[tuple[int, int, int, int]]) -> None:
    """Append ``(start, end, kind, owner)`` for ``text`` (placed at ``offset`` of the joined text)."""
    for match in _TOKEN.finditer(text):
        start, end, part = offset + match.start(), offset + match.end(), match.group(0)
        if part[0].isalnum() or part[0] == "_":
            subs = [(m.start(), m.end(), m.group(0)) for m in _SUBTOKEN.finditer(part)]
            kinds = [_DIGIT if len(s) == 1 and s.isdecimal() else _word_kind(s) for _, _, s in subs]
            identifier = "_" in part or (_DIGIT in kinds and any(k in (_WORD, _FILLER) for k in kinds))
            if identifier or not subs:
                out.append((start, end, _WORD, owner))  # letters and digits together: an id, not a number
            else:
                out.extend((start + a, start + b, kind, owner) for (a, b, _), kind in zip(subs, kinds, strict=True))
        else:
            out.append((start, end, _SEP if len(part) <= _MAX_SEPARATOR and "\n" not in part else _BREAK, owner))


def _runs(tokens: list[tuple[int, int, int, int]]) -> list[tuple[int, int]]:
    """The runs of number tokens (first and last token index), joined over separators and fillers."""
    runs: list[tuple[int, int]] = []
    first = last = -1
    fillers = 0
    for i, (_, _, kind, _) in enumerate(tokens):
        if kind in (_DIGIT, _NUMWORD):
            if first < 0:
                first = i
            last, fillers = i, 0
        elif first >= 0 and (kind == _SEP or (kind == _FILLER and fillers < _MAX_FILLERS)):
            fillers += kind == _FILLER
        elif first >= 0:
            runs.append((first, last))
            first, fillers = -1, 0
    if first >= 0:
        runs.append((first, last))
    return runs


def _masked_pieces(texts: Sequence[str]) -> list[list[tuple[int, int, str]]]:
    """For each text, the ``(start, end, replacement)`` pieces to mask, in order."""
    from gocare_voice.conversation.phone import spoken_to_dial_string

    tokens: list[tuple[int, int, int, int]] = []
    offsets: list[int] = []
    joined = ""
    for owner, text in enumerate(texts):
        if owner:
            tokens.append((len(joined), len(joined) + 1, _SEP, -1))  # the pause between two turns
            joined += " "
        offsets.append(len(joined))
        _tokens(text, len(joined), owner, tokens)
        joined += text
    pieces: list[list[tuple[int, int, str]]] = [[] for _ in texts]

    def text_of(token: tuple[int, int, int, int]) -> str:
        return joined[token[0]:token[1]]

    for first, last in _runs(tokens):
        chunk = joined[tokens[first][0]:tokens[last][1]]
        digits = spoken_to_dial_string(chunk).lstrip("+")
        if len(digits) < _MIN_DIGITS or _IPV4.fullmatch(chunk):
            continue
        run = tokens[first:last + 1]
        has_words = any(kind == _NUMWORD for _, _, kind, _ in run)
        numbered = [t for t in run if t[2] in (_DIGIT, _NUMWORD)]
        keep_from = len([t for t in numbered if t[2] == _DIGIT]) - 2  # a digits-only run keeps its last two
        seen = 0
        for owner in sorted({t[3] for t in numbered}):
            mine = [t for t in run if t[3] == owner]
            start, end = mine[0][0] - offsets[owner], mine[-1][1] - offsets[owner]
            if has_words:
                pieces[owner].append((start, end, "<number words>"))
                continue
            shown = ""
            for digit in (text_of(t) for t in mine if t[2] == _DIGIT):
                shown += "*" if seen < keep_from else str(unicodedata.decimal(digit))
                seen += 1
            pieces[owner].append((start, end, shown))
    return pieces


def _apply(text: str, pieces: list[tuple[int, int, str]]) -> str:
    out, at = [], 0
    for start, end, replacement in pieces:
        out.append(text[at:start])
        out.append(replacement)
        at = end
    out.append(text[at:])
    return "".join(out)


def mask_numbers(text: str) -> str:
    """``text`` with everything the phone parser could read as a number of six or more digits masked (see
    the comment above): a run of digits keeps its last two (``********10``), a run with number words becomes
    ``<number words>``. Newlines end a run, so a whole transcript can be masked at once. Pure; never raises."""
    return _apply(text, _masked_pieces([text])[0])


def mask_numbers_across(texts: Sequence[str]) -> list[str]:
    """``mask_numbers`` over consecutive texts read as one: the user turns of the number check, where a
    caller who pauses between "98765" and "43210" gives two turns of five digits each, both masked."""
    return [_apply(text, pieces) for text, pieces in zip(texts, _masked_pieces(list(texts)), strict=True)]


mask_digit_runs = mask_numbers
"""The older name (the log filter's); the same function."""


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
