"""Who owns a room in ``jwt`` mode: one rule, used by ``/getToken``, ``/api/token`` and ``/voice/upload``.

A room name is ``<owner>-<suffix>`` where the suffix is everything after the **last** ``-`` and is not empty.
The owner is therefore a function of the name alone: ``user-42-care`` belongs to ``user-42`` and to nobody
else, whatever the user ids look like. Why not "starts with ``<sub>-``" (the old rule): it gave the user
``user`` the room ``user-42-care`` of the user ``user-42``, and ``u1`` every room of ``u1-2``; any prefix rule
is ambiguous when one id is a prefix of another followed by the separator. Why not ``room == sub`` too: the
name ``user-42`` would then belong both to ``user-42`` (whole name) and to ``user`` (suffix ``42``).

The price: a suffix contains no ``-`` (``user-42-care_1``, not ``user-42-care-1``). User ids may contain
anything ``check_name`` allows, ``-`` included. The app need not build names at all: without a room the
service picks ``<sub>-<random>`` (``own_room_name``).
"""

from __future__ import annotations

import secrets

SEPARATOR = "-"


def room_owner(room: str) -> str | None:
    """The only user id that may use ``room``, or None when the name has no owner (no ``-``, empty suffix)."""
    owner, separator, suffix = room.rpartition(SEPARATOR)
    if not separator or not owner or not suffix:
        return None
    return owner


def room_for(owner: str, suffix: str) -> str:
    """``<owner>-<suffix>``; ``suffix`` must be non-empty and free of the separator."""
    if not suffix or SEPARATOR in suffix:
        raise ValueError(f"a room suffix is non-empty and has no {SEPARATOR!r}: {suffix!r}")
    return f"{owner}{SEPARATOR}{suffix}"


def own_room_name(owner: str | None) -> str:
    """A fresh room for a caller who did not name one (``gocare-<random>`` with authentication off)."""
    return room_for(owner if owner is not None else "gocare", secrets.token_hex(6))
