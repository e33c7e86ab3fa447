"""What one conversation knows about its user, shared by every agent of the session.

One ``SessionState`` per ``AgentSession`` (its ``userdata``), so tools read it through
``RunContext[SessionState]`` and handoffs carry it without globals. It never holds a full phone number:
only the masked form, which is safe to log and to show.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from gocare_voice.protocol import DEFAULT_MODE, MODES, Mode

from .identity import Identity, first_name

__all__ = ["MODES", "Mode", "SessionState"]

VerificationOutcome = Literal["verified", "mismatch", "unreadable", "locked_out", "directory_error"]
"""One number check: ``verified``, ``mismatch`` (a number, not the registered one), ``unreadable`` (not a
complete number), ``directory_error`` (the directory could not be asked; no attempt used); ``locked_out``
follows the failed check that used up the last attempt."""
VERIFICATION_OUTCOMES: tuple[str, ...] = get_args(VerificationOutcome)


@dataclass(kw_only=True, slots=True)
class SessionState:
    """Mutable per-session facts.

    ``user_id``/``user_name`` come from the participant's metadata (and, when the number identified the
    user, from the directory); ``authenticated`` gates everything after the number check; ``attempts``
    counts failed checks so the limit holds across retries; ``greeted`` lets the worker greet exactly once
    even when the metadata arrives after the session started.
    """

    user_id: str | None = None
    user_name: str | None = None
    masked_phone: str | None = None
    authenticated: bool = False
    attempts: int = 0
    mode: Mode = DEFAULT_MODE
    greeted: bool = False
    conversation_active: bool = True
    room_name: str | None = None
    participant_identity: str | None = None
    handoffs: list[str] = field(default_factory=list)
    verifications: list[VerificationOutcome] = field(default_factory=list)
    on_verification: Callable[[VerificationOutcome], None] | None = None
    """Told of every outcome as it happens (the worker counts them: worker/metrics.py, and records them)."""
    memory: str | None = None
    """Summaries of the verified caller's last calls (records/summary.py), for the assistant's instructions."""

    @classmethod
    def from_identity(cls, identity: Identity | None, **extra: Any) -> SessionState:
        state = cls(**extra)
        if identity is not None:
            state.apply_identity(identity)
        return state

    def record_verification(self, outcome: VerificationOutcome) -> None:
        self.verifications.append(outcome)
        if self.on_verification is not None:
            self.on_verification(outcome)

    @property
    def first_name(self) -> str | None:
        return first_name(self.user_name)

    @property
    def identity(self) -> Identity:
        return Identity(user_id=self.user_id, user_name=self.user_name, source="session")

    def apply_identity(self, identity: Identity) -> bool:
        """Take a newer identity (metadata changed). Before authentication anything may change; after it,
        the user id is fixed (it was verified) and only a missing name can be filled in.
        Returns True when something changed."""
        changed = False
        if identity.user_id and identity.user_id != self.user_id and not self.authenticated:
            self.user_id = identity.user_id
            changed = True
        if identity.user_name and identity.user_name != self.user_name:
            if not self.authenticated or not self.user_name:
                self.user_name = identity.user_name
                changed = True
        return changed

    def describe(self) -> dict[str, object]:
        """Loggable summary: no full number, no free text beyond the name."""
        return {
            "user_id": self.user_id,
            "user_name": self.user_name,
            "phone": self.masked_phone,
            "authenticated": self.authenticated,
            "attempts": self.attempts,
            "mode": self.mode,
        }
