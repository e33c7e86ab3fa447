"""Which word the agent greets with: a name the user or the directory gave, never a title or a symbol."""

from __future__ import annotations

import pytest

from gocare_voice.conversation.identity import Identity, first_name, greeting_text, read_metadata


@pytest.mark.parametrize(("full", "expected"), [
    ("John Doe", "John"),
    ("Dr. Alice Brown", "Alice"),
    ("dr alice", "alice"),
    ("Mrs. Priya Sharma", "Priya"),
    ("Prof Dr. Hans Weber", "Hans"),
    ("Shri Ravi Kumar", "Ravi"),
    ("😀 Bob", "Bob"),
    ("😀Bob", "Bob"),
    ("(Bob) Smith", "Bob"),
    ("- #1 Zoe", "Zoe"),
    ("John\nDoe", "John"),
    ("John\tDoe", "John"),
    ("John\u00a0Doe", "John"),
    ("O'Neil Jones", "O'Neil"),
    ("Jean-Luc Picard", "Jean-Luc"),
    ("अनिल कुमार", "अनिल"),
    ("Dr.", None),
    ("😀 🎉", None),
    ("", None),
    (None, None),
])
def test_first_name_skips_titles_and_symbols(full: str | None, expected: str | None) -> None:
    assert first_name(full) == expected


def test_a_newline_inside_a_metadata_name_separates_words() -> None:
    identity = read_metadata('{"userId": "u", "userName": "John\\nDoe"}').identity
    assert identity.user_name == "John Doe"
    assert greeting_text(identity) == "Welcome John! Please say your registered mobile number."


def test_a_name_of_titles_and_symbols_only_gets_the_nameless_greeting() -> None:
    assert greeting_text(Identity(user_name="Mr. 😀")) == "Welcome. Please say your registered mobile number."
