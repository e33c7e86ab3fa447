"""docs/protocol.md against ``gocare_voice.protocol``, the source of truth it names: the command table, the
modes of ``switch_agent``, the error codes and the message types. A protocol change that forgets the page
(or the page promising what the module does not do) fails here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

from gocare_voice import protocol

DOC = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()


def _section(title: str) -> str:
    start = DOC.index(title)
    following = re.search(r"\n#{2,3} ", DOC[start + len(title):])
    return DOC[start: start + len(title) + (following.start() if following else len(DOC))]


def _first_column(table_text: str) -> list[str]:
    lines = table_text.splitlines()
    body = lines[next(i for i, line in enumerate(lines) if line.startswith("| ---")) + 1:]
    rows = [line for line in body if line.startswith("| `")]
    return [re.match(r"\| `([^`]+)`", row).group(1) for row in rows]  # type: ignore[union-attr]  # rows start with "| `"


def test_the_page_names_the_module_as_the_source_of_truth() -> None:
    assert "The source of truth is `src/gocare_voice/protocol.py`" in DOC


def test_command_table_is_the_commands() -> None:
    assert _first_column(_section("## 3. App → agent: commands")) == list(protocol.COMMANDS)


def test_switch_agent_row_lists_the_modes() -> None:
    row = next(line for line in DOC.splitlines() if line.startswith(f"| `{protocol.SWITCH_AGENT}`"))
    arguments = row.split("`agent`:")[1].split("(")[0]  # "`assistant` \| `attorney` \| `click_to_talk` "
    assert re.findall(r"`(\w+)`", arguments) == list(protocol.MODES)


def test_error_table_is_the_error_codes() -> None:
    assert _first_column(_section("### 3.3 Error codes")) == list(protocol.ERROR_CODES)


def test_every_message_type_is_documented() -> None:
    for kind in (*protocol.INCOMING_TYPES, *protocol.OUTGOING_TYPES):
        assert f'"type": "{kind}"' in DOC, kind
    assert f"topic **`{protocol.TOPIC}`**" in DOC


def test_mode_type_and_alias_table_agree() -> None:
    assert get_args(protocol.Mode) == protocol.MODES
    for mode, aliases in protocol.MODE_ALIASES.items():
        for name in (mode, *aliases, mode.upper(), f"  {mode} "):
            assert protocol.normalize_mode(name) == mode


def test_every_mode_has_an_agent() -> None:
    from gocare_voice.conversation import agents

    assert set(agents._MODE_AGENTS) == set(protocol.MODES)
