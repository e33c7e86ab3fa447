"""The shape of ``src/gocare_voice``: no import cycle, and the pure modules stay pure.

Imports are read with ``ast`` from the source, module level and function level alike (a lazy import inside a
function is still a dependency: the old ``cli`` <-> ``cli_users`` cycle was made of lazy ones). Imports under
``if TYPE_CHECKING:`` are typing only and do not count. An edge goes to the module named, not to the
packages around it (importing ``gocare_voice.cli.common`` runs ``gocare_voice/cli/__init__.py`` first, which
Python handles; a cycle through explicit imports is what makes a change hard to place).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "gocare_voice"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in (SRC / PACKAGE).rglob("*.py")}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # "from pkg import module"
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {name for name in found if name in known and name != module}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = walk(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = walk(node)
            if cycle:
                return cycle
    return None


def test_the_graph_is_read() -> None:
    graph = import_graph()
    assert "gocare_voice.cli.common" in graph["gocare_voice.cli.users"]  # module level
    assert "gocare_voice.providers" in graph["gocare_voice.voice_upload.pipeline"]  # function level
    assert "gocare_voice.protocol" in graph["gocare_voice.conversation.executor"]  # relative + absolute
    assert "gocare_voice.conversation.state" in graph["gocare_voice.conversation.agents"]  # "from .state"


def test_the_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_in_src() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


PURE = ("gocare_voice.protocol", "gocare_voice.conversation.identity", "gocare_voice.conversation.phone",
        "gocare_voice.conversation.state", "gocare_voice.conversation.prompts", "gocare_voice.redact")


def _third_party(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in (PACKAGE, "__future__")}


def test_pure_modules_import_no_livekit() -> None:
    """The protocol and the identity/number/prompt logic run without LiveKit (the CLI, the token service and
    the docs' tests use them); only small, pure libraries are allowed."""
    modules = _modules()
    allowed = {"orjson", "phonenumbers"}
    for name in PURE:
        extra = _third_party(modules[name]) - allowed
        assert not extra, f"{name} imports {sorted(extra)}"
