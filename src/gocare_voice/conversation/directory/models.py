"""The table of registered users (SQLAlchemy 2.x declarative).

Numbers are stored normalised to E.164 so a lookup is one equality on a unique index, whatever shape the
number had when it was registered or spoken.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import DateTime, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

USER_ID_MAX = 128
NAME_MAX = 128
PHONE_MAX = 16  # "+" and at most 15 digits


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class RegisteredUser(Base):
    __tablename__ = "gocare_registered_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(USER_ID_MAX), nullable=False, unique=True, index=True)
    name: Mapped[str | None] = mapped_column(String(NAME_MAX), nullable=True)
    phone: Mapped[str] = mapped_column(String(PHONE_MAX), nullable=False, unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)

    def __repr__(self) -> str:  # never the full number, even in a debugger or a traceback
        from ...redact import mask_phone

        return f"RegisteredUser(user_id={self.user_id!r}, phone={mask_phone(self.phone)!r})"
