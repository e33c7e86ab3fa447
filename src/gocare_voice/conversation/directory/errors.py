"""Directory errors: one class per thing an operator can fix, each with a message fit for one CLI line.

Messages carry masked numbers only.
"""

from __future__ import annotations

from dataclasses import dataclass


class DirectoryError(Exception):
    """Base class; ``str(error)`` is a complete one-line explanation."""


class DatabaseMissing(DirectoryError):
    """A reading command found no database file (nothing registered yet)."""


class InvalidPhoneNumber(DirectoryError):
    def __init__(self, reason: str, *, user_id: str | None = None) -> None:
        who = f" for {user_id!r}" if user_id else ""
        super().__init__(f"invalid phone number{who}: {reason}")
        self.reason = reason
        self.user_id = user_id


class InvalidUser(DirectoryError):
    """A user id or name that cannot be stored (empty, too long, control characters)."""


class DuplicateUser(DirectoryError):
    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class UserNotFound(DirectoryError):
    pass


@dataclass(frozen=True, slots=True)
class RowProblem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class CsvImportError(DirectoryError):
    """The CSV was refused as a whole (nothing imported); ``problems`` lists each bad row."""

    def __init__(self, problems: list[RowProblem], *, summary: str | None = None) -> None:
        self.problems = problems
        super().__init__(summary or f"{len(problems)} bad row(s), nothing imported")
