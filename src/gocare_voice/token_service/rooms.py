"""Who owns a room in ``jwt`` mode: one rule (``may_use``), used by ``/getToken``, ``/api/token`` and
``/voice/upload`` (all through ``deps.authorize_room``).

A user's rooms are ``<user id>~<label>``: the owner of a name is everything before its **first** ``~``, the
label everything after it (not empty; any characters a room name may hold, ``~`` included). A user id that
contains ``~`` owns no room (the service answers 403 ``user_id_not_supported``). So the part before the first
``~`` is exactly one user id, and two distinct ids never share a room, by construction: ``room_owner`` is a
function of the name, and every room of ``a`` has the owner ``a``. A name without ``~`` (``user-42``) has
no owner at all.

Why ``~`` and not the ``-`` of issue 9.2 (owner = everything before the last ``-``): that rule was
disjoint too, but ``user-42``, the name user ``user-42`` would pick, was the room of the user ``user``, and
``user-42-care-1`` belonged to ``user-42-care``. Ids carry ``-`` (UUIDs: Cognito, Supabase, Keycloak), ``|``
(Auth0's ``auth0|...``), ``.`` (Apple), ``@`` (e-mail addresses), ``:`` and ``/`` (a JWT ``sub`` may be a
URI), ``_`` (Clerk, WorkOS); none of them uses ``~``, and ``~`` is an unreserved URL character, so
``?room=user-42~care`` needs no escaping. The app need not build names at all: without a room the service
picks ``<sub>~<random>`` (``own_room_name``).
"""

from __future__ import annotations

import secrets

SEPARATOR = "~"
MAX_ROOM_BYTES = 256
"""livekit-server's default ``limit.max_room_name_length`` (bytes of UTF-8): a longer name is refused at join."""


def can_own_rooms(user_id: str) -> bool:
    """A user id owns rooms unless it is empty or contains the separator (then no name could say it)."""
    return bool(user_id) and SEPARATOR not in user_id


def room_owner(room: str) -> str | None:
    """The only user id that may use ``room``, or None (no separator, nothing before or after it)."""
    owner, separator, label = room.partition(SEPARATOR)
    if not separator or not owner or not label:
        return None
    return owner


def may_use(user_id: str, room: str) -> bool:
    """The ownership rule: ``user_id`` may join ``room`` and send voice messages into it."""
    return can_own_rooms(user_id) and room_owner(room) == user_id


def room_for(owner: str, label: str) -> str:
    """``<owner>~<label>``; ``owner`` must be able to own rooms and ``label`` must not be empty."""
    if not can_own_rooms(owner):
        raise ValueError(f"a user id that owns rooms is not empty and has no {SEPARATOR!r}: {owner!r}")
    if not label:
        raise ValueError("a room label is not empty")
    return f"{owner}{SEPARATOR}{label}"


def own_room_name(owner: str | None) -> str:
    """A fresh room for a caller who did not name one: ``<owner>~<random>``, or ``gocare-<random>`` with
    authentication off (nobody owns rooms then)."""
    label = secrets.token_hex(6)
    return f"gocare-{label}" if owner is None else room_for(owner, label)
