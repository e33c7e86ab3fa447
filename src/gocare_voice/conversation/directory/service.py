"""``UserDirectory``: the registered users the agent checks mobile numbers against.

Built from a database URL (SQLite file by default, PostgreSQL by URL), passed explicitly to the agents and
the CLI: no module-level engine. Lookups use SQLAlchemy Core on the unique indexes (one primary-key-sized
row, no ORM identity map), which keeps a verification well under a millisecond on SQLite; the agent still
calls the async wrappers, which run the query in a worker thread (``asyncio.to_thread``), because against
PostgreSQL a query is a network round trip and the event loop must keep streaming audio meanwhile.
"""

from __future__ import annotations

import asyncio
import csv
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine, create_engine, delete, event, func, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, IntegrityError, NoSuchModuleError
from sqlalchemy.pool import StaticPool

from ...redact import mask_phone
from ..identity import clean_text
from ..phone import is_e164, parse_phone_number
from .errors import (
    CsvImportError,
    DatabaseMissing,
    DirectoryError,
    DuplicateUser,
    InvalidPhoneNumber,
    InvalidUser,
    RowProblem,
    UserNotFound,
)
from .models import NAME_MAX, USER_ID_MAX, Base, RegisteredUser, utcnow

logger = logging.getLogger("gocare.directory")

DEFAULT_DATABASE_URL = "sqlite:///gocare-users.db"
CSV_COLUMNS = ("user_id", "name", "phone")
MAX_CSV_ROWS = 1_000_000

_T = RegisteredUser.__table__
_C = _T.c


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A registered user, detached from any database session. ``repr`` masks the number."""

    user_id: str
    name: str | None
    phone: str
    created_at: datetime | None = None

    @property
    def masked_phone(self) -> str:
        return mask_phone(self.phone)

    def __repr__(self) -> str:
        return f"UserRecord(user_id={self.user_id!r}, name={self.name!r}, phone={self.masked_phone!r})"


@dataclass(frozen=True, slots=True)
class ImportResult:
    added: int
    skipped: list[RowProblem]
    updated: int = 0


def _clean(value: object, *, what: str, limit: int, required: bool) -> str | None:
    if value is None:
        text = ""
    elif isinstance(value, str):
        text = value
    else:
        raise InvalidUser(f"{what} must be text")
    text = clean_text(text)
    if not text:
        if required:
            raise InvalidUser(f"{what} is empty")
        return None
    if len(text) > limit:
        raise InvalidUser(f"{what} is longer than {limit} characters")
    return text


def _row(row: Any) -> UserRecord:
    return UserRecord(user_id=row.user_id, name=row.name, phone=row.phone, created_at=row.created_at)


def _shown_url(url: str) -> str:
    """A database URL fit for an error line: only its scheme, since a malformed URL cannot be trusted to
    keep its password where a parser would find and mask it."""
    scheme, separator, _ = url.partition("://")
    if not separator or not scheme.replace("+", "").isalnum():
        return f"<{len(url)} characters>"
    return f"'{scheme[:30]}://...' ({len(url)} characters)"


def make_engine(url: str, *, echo: bool = False, create: bool = True) -> Engine:
    """The engine for the directory database (also the call records': ``records.store``): a malformed URL
    or a missing driver is a ``DirectoryError`` that does not repeat the URL's password; SQLite gets WAL and
    a busy timeout; ``create=False`` never creates a file or a folder."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        # not the URL itself: a malformed one still carries its password
        raise DirectoryError(
            f"not a database URL: {_shown_url(url)} (e.g. sqlite:///gocare-users.db)"
        ) from None
    if parsed.get_backend_name() != "sqlite":
        if parsed.drivername in ("postgresql", "postgres"):
            # a plain postgresql:// URL means psycopg2 to SQLAlchemy; we ship psycopg 3 (extra "postgres")
            parsed = parsed.set(drivername="postgresql+psycopg")
        try:
            return create_engine(parsed, echo=echo, pool_pre_ping=True, future=True, hide_parameters=True)
        except (ModuleNotFoundError, NoSuchModuleError) as error:
            raise DirectoryError(
                f"the database driver for {parsed.drivername} is not available ({error}); "
                "for PostgreSQL install gocare-voice[postgres] (psycopg)"
            ) from None
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    if not in_memory:
        path = Path(database).expanduser()
        if not create and not path.parent.is_dir():
            # a reading command must not grow a folder tree and an empty directory out of a typo
            raise DirectoryError(f"the folder {path.parent.resolve()} does not exist (database {url})")
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.exists():
            raise DatabaseMissing(f"no user directory at {path.resolve()} yet ('gocare users add' or 'import' creates it)")
    engine = create_engine(
        parsed,
        echo=echo,
        hide_parameters=True,  # parameters are phone numbers: keep them out of error texts and echo logs
        connect_args={"check_same_thread": False},
        # an in-memory database exists once per connection: share that one connection
        poolclass=StaticPool if in_memory else None,
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 5000")  # the CLI may write while the worker reads
        if not in_memory:
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    return engine


class UserDirectory:
    """Registered users on SQLAlchemy.

    ``region`` is the default region for numbers given without a country code (``GOCARE_PHONE_REGION``);
    ``create_schema`` creates the table when missing, so a fresh SQLite file just works; without it (the
    CLI's reading commands) a SQLite file that does not exist is an error (``DatabaseMissing``), and so is a
    missing folder: never an empty database created as a side effect of reading.
    """

    def __init__(
        self,
        *,
        url: str = DEFAULT_DATABASE_URL,
        region: str = "IN",
        create_schema: bool = True,
        echo: bool = False,
    ) -> None:
        self.region = region
        self._engine = self._make_engine(url, echo=echo, create=create_schema)
        self.url_for_display = self._engine.url.render_as_string(hide_password=True)
        if create_schema:
            try:
                Base.metadata.create_all(self._engine)
            except DatabaseError as error:  # "unable to open", "file is not a database", a refused login
                raise DirectoryError(f"cannot open the user directory at {self.url_for_display}: {error.orig}") from None

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> UserDirectory:
        return cls(url=settings.database_url, region=settings.phone_region, **kwargs)

    @staticmethod
    def _make_engine(url: str, *, echo: bool, create: bool = True) -> Engine:
        return make_engine(url, echo=echo, create=create)

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> UserDirectory:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- normalisation ---------------------------------------------------------------------------
    def normalize(self, phone: object, *, user_id: str | None = None) -> str:
        """Any accepted shape -> E.164, or ``InvalidPhoneNumber`` with the reason."""
        parsed = parse_phone_number(phone, region=self.region)
        if parsed.e164 is None:
            raise InvalidPhoneNumber(parsed.reason or "not a phone number", user_id=user_id)
        return parsed.e164

    # --- writes ----------------------------------------------------------------------------------
    def add(self, *, user_id: str, name: str | None, phone: str) -> UserRecord:
        uid = _clean(user_id, what="user id", limit=USER_ID_MAX, required=True)
        assert uid is not None
        clean_name = _clean(name, what="name", limit=NAME_MAX, required=False)
        e164 = self.normalize(phone, user_id=uid)
        created = utcnow()
        with self._engine.begin() as conn:
            self._refuse_duplicates(conn, [(uid, e164)])
            try:
                conn.execute(insert(_T).values(user_id=uid, name=clean_name, phone=e164, created_at=created))
            except IntegrityError:
                # a concurrent writer won the race between our check and the insert
                raise DuplicateUser(f"user {uid!r} or number {mask_phone(e164)} is already registered", field="user_id") from None
        logger.info("directory: added user_id=%s phone=%s", uid, mask_phone(e164))
        return UserRecord(user_id=uid, name=clean_name, phone=e164, created_at=created)

    def _refuse_duplicates(self, conn: Any, pairs: list[tuple[str, str]]) -> None:
        uids = [u for u, _ in pairs]
        phones = [p for _, p in pairs]
        for chunk in _chunks(uids, 500):
            taken = conn.execute(select(_C.user_id).where(_C.user_id.in_(chunk))).first()
            if taken is not None:
                raise DuplicateUser(f"user id {taken.user_id!r} is already registered", field="user_id")
        for chunk in _chunks(phones, 500):
            taken = conn.execute(select(_C.user_id, _C.phone).where(_C.phone.in_(chunk))).first()
            if taken is not None:
                raise DuplicateUser(
                    f"number {mask_phone(taken.phone)} is already registered (user {taken.user_id!r})",
                    field="phone",
                )

    def add_many(self, records: Iterable[tuple[str, str | None, str]]) -> int:
        """Insert already-validated ``(user_id, name, e164)`` rows in one transaction (imports, benchmarks)."""
        rows = [
            {"user_id": uid, "name": name, "phone": phone, "created_at": utcnow()} for uid, name, phone in records
        ]
        if not rows:
            return 0
        with self._engine.begin() as conn:
            self._refuse_duplicates(conn, [(r["user_id"], r["phone"]) for r in rows])
            for chunk in _chunks(rows, 5000):
                conn.execute(insert(_T), chunk)
        return len(rows)

    def import_csv(
        self, source: str | Path | IO[str], *, skip_errors: bool = False, update: bool = False
    ) -> ImportResult:
        """Import ``user_id,name,phone`` rows (header required, any column order, extra columns ignored;
        every column must have a value: the agent greets with the name).

        All or nothing by default: one bad row (invalid number, duplicate in the file or in the directory)
        refuses the file with every problem listed. ``skip_errors`` imports the good rows instead.
        ``update`` (upsert): a user id already registered gets the row's name and number instead of being
        a problem; a number registered to *another* user still is one.
        """
        if isinstance(source, (str, Path)):
            try:
                with open(source, encoding="utf-8-sig", newline="") as handle:
                    return self._import_rows(handle, skip_errors=skip_errors, update=update)
            except FileNotFoundError:
                raise DirectoryError(f"no such file: {source}") from None
            except UnicodeDecodeError:
                raise DirectoryError(f"{source} is not UTF-8 text") from None
            except IsADirectoryError:
                raise DirectoryError(f"{source} is a directory, not a CSV file") from None
        return self._import_rows(source, skip_errors=skip_errors, update=update)

    def _import_rows(self, handle: IO[str], *, skip_errors: bool, update: bool = False) -> ImportResult:
        try:
            reader = csv.DictReader(handle)
            header = [(h or "").strip().lower().lstrip("\ufeff") for h in (reader.fieldnames or [])]
        except csv.Error as error:
            raise DirectoryError(f"not a CSV file: {error}") from None
        missing = [c for c in CSV_COLUMNS if c not in header]
        if missing:
            raw_header = ",".join(header)
            other = next((d for d in (";", "\t", "|") if d in raw_header), None)
            hint = (
                f"; the file seems to use {other!r} between columns: save it with commas" if other else ""
            )
            raise DirectoryError(
                f"CSV header must name the columns {','.join(CSV_COLUMNS)} (missing: {', '.join(missing)}){hint}"
            )
        reader.fieldnames = header
        problems: list[RowProblem] = []
        good: list[tuple[str, str | None, str]] = []
        seen_ids: dict[str, int] = {}
        seen_phones: dict[str, int] = {}
        try:
            for row in reader:
                line = reader.line_num
                if len(good) + len(problems) >= MAX_CSV_ROWS:
                    raise DirectoryError(f"CSV has more than {MAX_CSV_ROWS} rows; split it")
                if not any((v or "").strip() for k, v in row.items() if isinstance(v, str)):
                    continue  # blank line
                try:
                    uid = _clean(row.get("user_id"), what="user id", limit=USER_ID_MAX, required=True)
                    assert uid is not None
                    name = _clean(row.get("name"), what="name", limit=NAME_MAX, required=True)
                    e164 = self.normalize(row.get("phone"), user_id=uid)
                except DirectoryError as error:
                    problems.append(RowProblem(line, str(error)))
                    continue
                if uid in seen_ids:
                    problems.append(RowProblem(line, f"user id {uid!r} repeats line {seen_ids[uid]}"))
                    continue
                if e164 in seen_phones:
                    problems.append(RowProblem(line, f"number {mask_phone(e164)} repeats line {seen_phones[e164]}"))
                    continue
                seen_ids[uid] = line
                seen_phones[e164] = line
                good.append((uid, name, e164))
        except csv.Error as error:
            raise DirectoryError(f"CSV is malformed near line {reader.line_num}: {error}") from None

        # rows that clash with users already registered
        existing_ids, phone_owner = self._existing(good)
        kept: list[tuple[str, str | None, str]] = []
        updates: list[tuple[str, str | None, str]] = []
        for uid, name, e164 in good:
            owner = phone_owner.get(e164)
            if uid in existing_ids and not update:
                problems.append(RowProblem(seen_ids[uid], f"user id {uid!r} is already registered (--update changes it)"))
            elif owner is not None and owner != uid:
                problems.append(RowProblem(seen_ids[uid], f"number {mask_phone(e164)} is already registered"))
            elif uid in existing_ids:
                updates.append((uid, name, e164))
            else:
                kept.append((uid, name, e164))
        problems.sort(key=lambda p: p.line)
        if problems and not skip_errors:
            raise CsvImportError(problems)
        added, updated = self._write_import(kept, updates)
        logger.info("directory: imported %d user(s), updated %d, skipped %d row(s)", added, updated, len(problems))
        return ImportResult(added=added, skipped=problems, updated=updated)

    def _write_import(
        self, new: list[tuple[str, str | None, str]], changed: list[tuple[str, str | None, str]]
    ) -> tuple[int, int]:
        """Inserts and updates of one import in one transaction: all of them or none."""
        with self._engine.begin() as conn:
            for uid, name, e164 in changed:
                conn.execute(update(_T).where(_C.user_id == uid).values(name=name, phone=e164))
            if new:
                self._refuse_duplicates(conn, [(uid, e164) for uid, _, e164 in new])
                rows = [{"user_id": u, "name": n, "phone": p, "created_at": utcnow()} for u, n, p in new]
                for chunk in _chunks(rows, 5000):
                    conn.execute(insert(_T), chunk)
        return len(new), len(changed)

    def _existing(self, rows: list[tuple[str, str | None, str]]) -> tuple[set[str], dict[str, str]]:
        """The user ids among ``rows`` already registered, and the owner of each of their numbers."""
        ids: set[str] = set()
        phones: dict[str, str] = {}
        with self._engine.connect() as conn:
            for chunk in _chunks([r[0] for r in rows], 500):
                ids.update(conn.execute(select(_C.user_id).where(_C.user_id.in_(chunk))).scalars())
            for chunk in _chunks([r[2] for r in rows], 500):
                phones.update((row.phone, row.user_id) for row in conn.execute(
                    select(_C.phone, _C.user_id).where(_C.phone.in_(chunk))
                ))
        return ids, phones

    def remove(self, user_id: str) -> UserRecord:
        """Delete one user; ``UserNotFound`` when there is none (so the CLI can say so)."""
        with self._engine.begin() as conn:
            found = conn.execute(select(_T).where(_C.user_id == user_id)).first()
            if found is None:
                raise UserNotFound(f"no registered user with id {user_id!r}")
            conn.execute(delete(_T).where(_C.user_id == user_id))
        record = _row(found)
        logger.info("directory: removed user_id=%s phone=%s", record.user_id, record.masked_phone)
        return record

    # --- reads -----------------------------------------------------------------------------------
    def list(self, *, limit: int | None = None, offset: int = 0) -> list[UserRecord]:
        query = select(_T).order_by(_C.user_id).offset(max(offset, 0))
        if limit is not None:
            query = query.limit(max(limit, 0))
        with self._engine.connect() as conn:
            return [_row(r) for r in conn.execute(query)]

    def count(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(_T)).scalar_one())

    def get(self, user_id: str) -> UserRecord | None:
        if not isinstance(user_id, str) or not user_id:
            return None
        with self._engine.connect() as conn:
            row = conn.execute(select(_T).where(_C.user_id == user_id)).first()
        return _row(row) if row is not None else None

    def find_by_phone(self, phone: str) -> UserRecord | None:
        """Look a number up in any accepted shape; an unreadable number finds nobody (no exception)."""
        e164 = phone if is_e164(phone) else parse_phone_number(phone, region=self.region).e164
        if e164 is None:
            return None
        with self._engine.connect() as conn:
            row = conn.execute(select(_T).where(_C.phone == e164)).first()
        return _row(row) if row is not None else None

    def verify(self, user_id: str | None, e164: str) -> UserRecord | None:
        """The number check: with a known ``user_id`` the number must be that user's own; without one, the
        number identifies the user. None for every kind of mismatch, so callers cannot tell "registered to
        someone else" from "not registered"."""
        if not is_e164(e164):
            return None
        query = select(_T).where(_C.phone == e164)
        if user_id:
            query = query.where(_C.user_id == user_id)
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return _row(row) if row is not None else None

    # --- async wrappers for the agent (queries run off the event loop) ---------------------------
    async def averify(self, user_id: str | None, e164: str) -> UserRecord | None:
        return await asyncio.to_thread(self.verify, user_id, e164)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]

