"""Registered users (SQLAlchemy; SQLite file by default, PostgreSQL by URL)."""

from __future__ import annotations

from .errors import (
    DatabaseMissing,
    CsvImportError,
    DirectoryError,
    DuplicateUser,
    InvalidPhoneNumber,
    InvalidUser,
    RowProblem,
    UserNotFound,
)
from .models import RegisteredUser
from .service import DEFAULT_DATABASE_URL, ImportResult, UserDirectory, UserRecord, make_engine

__all__ = [
    "DatabaseMissing",
    "DEFAULT_DATABASE_URL",
    "CsvImportError",
    "DirectoryError",
    "DuplicateUser",
    "ImportResult",
    "InvalidPhoneNumber",
    "InvalidUser",
    "RegisteredUser",
    "RowProblem",
    "UserDirectory",
    "UserNotFound",
    "UserRecord",
    "make_engine",
]
