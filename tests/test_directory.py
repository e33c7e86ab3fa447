"""The registered-user directory on a real SQLite file (and PostgreSQL when GOCARE_TEST_POSTGRES_URL is set)."""

from __future__ import annotations


import asyncio
import io
import logging
import sqlite3
import uuid
from pathlib import Path

import pytest
from sqlalchemy import inspect

from gocare_voice.conversation.directory import (
    CsvImportError,
    DirectoryError,
    DuplicateUser,
    InvalidPhoneNumber,
    InvalidUser,
    UserDirectory,
    UserNotFound,
)
from gocare_voice.settings import Settings

JOHN = "+919876543210"
PRIYA = "+919123455789"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "users.db"  # parent directory does not exist yet on purpose


@pytest.fixture
def users(db_path: Path) -> UserDirectory:
    directory = UserDirectory(url=f"sqlite:///{db_path}", region="IN")
    yield directory
    directory.close()


def test_schema_is_created_with_unique_indexed_phone(users: UserDirectory, db_path: Path) -> None:
    assert db_path.is_file()
    inspector = inspect(users.engine)
    columns = {c["name"] for c in inspector.get_columns("gocare_registered_users")}
    assert {"user_id", "name", "phone", "created_at"} <= columns
    indexes = {tuple(ix["column_names"]): ix["unique"] for ix in inspector.get_indexes("gocare_registered_users")}
    assert indexes.get(("phone",))  # SQLite reports 1, PostgreSQL True
    assert indexes.get(("user_id",))
    # the lookup really uses the index (no table scan)
    with sqlite3.connect(db_path) as raw:
        plan = " ".join(str(row) for row in raw.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM gocare_registered_users WHERE phone = ?", (JOHN,)
        ))
    assert "USING INDEX" in plan


def test_add_normalises_and_lookups_find_by_any_shape(users: UserDirectory) -> None:
    record = users.add(user_id="user-john", name="  John   Doe ", phone="98765-43210")
    assert record.phone == JOHN and record.name == "John Doe" and record.created_at is not None
    assert users.get("user-john") == users.find_by_phone("+91 98765 43210")
    assert users.find_by_phone("nine eight seven six five four three two one zero").user_id == "user-john"
    assert users.find_by_phone("not a number") is None
    assert users.get("nobody") is None and users.get("") is None
    assert "3210" in repr(record) and JOHN not in repr(record)


def test_verify_own_number_only_when_user_id_known(users: UserDirectory) -> None:
    users.add(user_id="user-john", name="John Doe", phone=JOHN)
    users.add(user_id="user-priya", name="Priya Sharma", phone=PRIYA)
    assert users.verify("user-john", JOHN).user_id == "user-john"
    assert users.verify("user-john", PRIYA) is None  # someone else's number
    assert users.verify("user-john", "+919988776655") is None  # nobody's number
    assert users.verify("user-ghost", JOHN) is None  # unknown user id
    assert users.verify(None, PRIYA).name == "Priya Sharma"  # no id: the number identifies the user
    assert users.verify(None, "98765 43210") is None  # verify takes E.164 only
    assert asyncio.run(users.averify("user-john", JOHN)).user_id == "user-john"


def test_duplicates_are_refused_with_a_clear_masked_message(users: UserDirectory) -> None:
    users.add(user_id="user-john", name="John Doe", phone=JOHN)
    with pytest.raises(DuplicateUser) as same_phone:
        users.add(user_id="user-other", name="Other", phone="0 98765 43210")
    assert same_phone.value.field == "phone"
    assert "+91******3210" in str(same_phone.value) and JOHN not in str(same_phone.value)
    with pytest.raises(DuplicateUser) as same_id:
        users.add(user_id="user-john", name="John Again", phone=PRIYA)
    assert same_id.value.field == "user_id"
    assert users.count() == 1


@pytest.mark.parametrize("phone", ["123", "", "hello", "1800 123 4567", "9" * 30])
def test_invalid_numbers_are_refused(users: UserDirectory, phone: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as refused:
        users.add(user_id="user-x", name="X", phone=phone)
    assert str(refused.value).startswith("invalid phone number for 'user-x': ")
    assert users.count() == 0


@pytest.mark.parametrize("user_id", ["", "   ", "x" * 200, "\x00\x01"])
def test_invalid_user_ids_are_refused(users: UserDirectory, user_id: str) -> None:
    with pytest.raises(InvalidUser):
        users.add(user_id=user_id, name="X", phone=JOHN)


def test_list_remove_and_count(users: UserDirectory) -> None:
    users.add(user_id="b", name="Bee", phone=PRIYA)
    users.add(user_id="a", name=None, phone=JOHN)
    assert [r.user_id for r in users.list()] == ["a", "b"]
    assert [r.user_id for r in users.list(limit=1, offset=1)] == ["b"]
    assert users.remove("a").phone == JOHN
    with pytest.raises(UserNotFound, match="no registered user with id 'a'"):
        users.remove("a")
    assert users.count() == 1


def test_data_survives_reopening_the_file(db_path: Path) -> None:
    with UserDirectory(url=f"sqlite:///{db_path}", region="IN") as first:
        first.add(user_id="user-john", name="John Doe", phone=JOHN)
    with UserDirectory(url=f"sqlite:///{db_path}", region="IN") as second:
        assert second.verify("user-john", JOHN) is not None


def test_import_csv_all_or_nothing(users: UserDirectory, tmp_path: Path) -> None:
    users.add(user_id="existing", name="Existing", phone="+919000000001")
    csv_file = tmp_path / "users.csv"
    csv_file.write_text(
        "\ufeffUser_ID,Name,Phone,extra\n"
        "user-john,John Doe,98765 43210,x\n"
        "user-bad,Bad,12,x\n"
        "user-john,Again,91234 55789,x\n"
        "user-dup-phone,Dup,+91 98765 43210,x\n"
        "user-clash,Clash,+91 90000 00001,x\n"
        "\n",
        encoding="utf-8",
    )
    with pytest.raises(CsvImportError) as refused:
        users.import_csv(csv_file)
    lines = [str(p) for p in refused.value.problems]
    assert lines[0] == "line 3: invalid phone number for 'user-bad': too few digits (2)"
    assert lines[1] == "line 4: user id 'user-john' repeats line 2"
    assert lines[2] == "line 5: number +91******3210 repeats line 2"
    assert lines[3] == "line 6: number +91******0001 is already registered"
    assert users.count() == 1  # nothing imported

    result = users.import_csv(csv_file, skip_errors=True)
    assert result.added == 1 and len(result.skipped) == 4
    assert users.get("user-john").phone == JOHN


def test_import_csv_refuses_bad_files(users: UserDirectory, tmp_path: Path) -> None:
    with pytest.raises(DirectoryError, match="missing: phone"):
        users.import_csv(io.StringIO("user_id,name\nu,N\n"))
    with pytest.raises(DirectoryError, match="no such file"):
        users.import_csv(tmp_path / "missing.csv")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage\x00")
    with pytest.raises(DirectoryError):
        users.import_csv(binary)
    with pytest.raises(DirectoryError, match="is a directory"):
        users.import_csv(tmp_path)
    assert users.import_csv(io.StringIO("user_id,name,phone\n")).added == 0


def test_from_settings_uses_database_url_and_region(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", phone_region="US")
    with UserDirectory.from_settings(settings) as users:
        assert users.add(user_id="u", name="U", phone="(202) 555-0123").phone == "+12025550123"


def test_bad_urls_are_clear_errors() -> None:
    with pytest.raises(DirectoryError, match="not a database URL"):
        UserDirectory(url="nonsense")
    with pytest.raises(DirectoryError, match="driver"):
        UserDirectory(url="mysql+nosuchdriver://u:p@localhost/db")


def test_logs_never_contain_full_numbers(users: UserDirectory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gocare")
    users.add(user_id="user-john", name="John Doe", phone=JOHN)
    users.remove("user-john")
    assert caplog.records and all(JOHN not in r.getMessage() and "9876543210" not in r.getMessage() for r in caplog.records)


def test_database_errors_do_not_carry_the_number(users: UserDirectory) -> None:
    """SQLAlchemy puts the statement's parameters into its error text, which ends up in tracebacks and logs."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    users.add(user_id="user-john", name="John Doe", phone=JOHN)
    with users.engine.begin() as conn:
        conn.execute(text("DROP TABLE gocare_registered_users"))
    for check in (lambda: users.verify(None, JOHN), lambda: users.verify("user-john", JOHN),
                  lambda: users.find_by_phone(JOHN)):
        with pytest.raises(SQLAlchemyError) as failed:
            check()
        assert "9876543210" not in str(failed.value)
        assert "hidden" in str(failed.value)  # SQLAlchemy says so instead of the values



def test_postgresql_by_url(postgres_url: str) -> None:
    users = UserDirectory(url=postgres_url, region="IN")
    uid = f"pg-{uuid.uuid4().hex[:8]}"
    try:
        users.add(user_id=uid, name="PG User", phone="+919876500000")
        assert users.verify(uid, "+919876500000").user_id == uid
        assert users.verify(None, "+919876500000").user_id == uid
        assert users.find_by_phone("98765 00000").user_id == uid
        assert users.verify("someone-else", "+919876500000") is None
        with pytest.raises(DuplicateUser):
            users.add(user_id=uid + "x", name="Dup", phone="98765 00000")
    finally:
        try:
            users.remove(uid)
        finally:
            users.close()
