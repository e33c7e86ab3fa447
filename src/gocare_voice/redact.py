"""Keep secrets and personal data out of logs: masked phone numbers and tokens."""

from __future__ import annotations

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
