"""The call analysis plan: the fields the configured LLM fills in at the end of a call. Pure (no LLM, no I/O
but ``load_plan`` reading one file).

The operator owns the plan (``GOCARE_CALL_ANALYSIS_PLAN``, YAML or JSON; the GoCare plan ships as
``default_plan.yaml`` beside this module). It is data checked like a setting: every problem is one line
naming the field, and a plan with any problem is refused at start. What the plan allows is bounded on
purpose: field names and choice values are short lowercase identifiers, because they become JSON keys of
every record, SQL paths of the filters and Prometheus label values.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIELD_TYPES = ("text", "boolean", "number", "choice")
NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
"""A field's name: a JSON key, a ``--where`` name, a metrics label value."""
CHOICE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
"""A choice's value: also a metrics label value, so a short identifier, never free text."""
RESERVED = frozenset({"success"})
"""Keys the analysis itself uses beside the plan's fields."""
MAX_FIELDS = 20
MAX_CHOICES = 12
MAX_DESCRIPTION = 600
MAX_TEXT_LENGTH = 1000
DEFAULT_TEXT_LENGTH = 300
MAX_CRITERIA = 10
DEFAULT_PLAN_FILE = Path(__file__).with_name("default_plan.yaml")

_PLAN_KEYS = frozenset({"name", "instructions", "fields", "success_criteria"})
_FIELD_KEYS = frozenset({"name", "type", "description", "choices", "required", "alert", "max_length", "minimum",
                         "maximum"})

Value = str | bool | float | None


class PlanError(ValueError):
    """An invalid plan; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class PlanField:
    name: str
    type: str
    description: str
    choices: tuple[str, ...] = ()
    required: bool = True
    """False: the model answers null when the call did not say (a callback time nobody asked for)."""
    alert: tuple[str | bool, ...] = ()
    """Values that send the alert webhook at once (a choice's values, or ``true``/``false``)."""
    max_length: int = DEFAULT_TEXT_LENGTH
    minimum: float | None = None
    maximum: float | None = None

    @property
    def countable(self) -> bool:
        """Boolean and choice fields: a bounded set of values, counted in the metrics."""
        return self.type in ("boolean", "choice")


@dataclass(frozen=True, slots=True)
class AnalysisPlan:
    fields: tuple[PlanField, ...]
    name: str = "custom"
    """Stored with each analysis, so a record says which plan filled it."""
    instructions: str | None = None
    """What the model should know about the service (who calls, what the assistant does)."""
    success_criteria: tuple[str, ...] = ()

    def field(self, name: str) -> PlanField | None:
        return next((f for f in self.fields if f.name == name), None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


def _text(value: Any, where: str, problems: list[str], *, limit: int, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{where}: must be a non-empty text")
        return None
    if len(value) > limit:
        problems.append(f"{where}: at most {limit} characters")
        return None
    return " ".join(value.split())


def _number(value: Any, where: str, problems: list[str]) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        problems.append(f"{where}: must be a number")
        return None
    return float(value)


def _field(raw: Any, index: int, problems: list[str]) -> PlanField | None:
    if not isinstance(raw, Mapping):
        problems.append(f"fields[{index}]: must be a mapping (name, type, description, ...)")
        return None
    name = raw.get("name")
    label = f"fields[{index}]" + (f" ({name})" if isinstance(name, str) and NAME.fullmatch(name) else "")
    start = len(problems)
    unknown = sorted(str(k) for k in raw if k not in _FIELD_KEYS)
    if unknown:
        problems.append(f"{label}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_FIELD_KEYS))})")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        problems.append(f"{label}: name must be a lowercase identifier (a-z, 0-9, _; at most 40 characters)")
    elif name in RESERVED:
        problems.append(f"{label}: the name {name!r} is reserved")
    kind = raw.get("type")
    if kind not in FIELD_TYPES:
        problems.append(f"{label}: type {kind!r} is not one of {', '.join(FIELD_TYPES)}")
    description = _text(raw.get("description"), f"{label}: description", problems, limit=MAX_DESCRIPTION)
    required = raw.get("required", True)
    if not isinstance(required, bool):
        problems.append(f"{label}: required must be true or false")
    choices: tuple[str, ...] = ()
    if kind == "choice":
        listed = raw.get("choices")
        if (not isinstance(listed, list) or not 2 <= len(listed) <= MAX_CHOICES
                or not all(isinstance(c, str) and CHOICE.fullmatch(c) for c in listed)):
            problems.append(f"{label}: choices must be a list of 2 to {MAX_CHOICES} lowercase identifiers")
        elif len(set(listed)) != len(listed):
            problems.append(f"{label}: choices must not repeat")
        else:
            choices = tuple(listed)
    elif "choices" in raw:
        problems.append(f"{label}: choices are only for type choice")
    max_length = raw.get("max_length", DEFAULT_TEXT_LENGTH)
    if "max_length" in raw and kind != "text":
        problems.append(f"{label}: max_length is only for type text")
    elif isinstance(max_length, bool) or not isinstance(max_length, int) or not 1 <= max_length <= MAX_TEXT_LENGTH:
        problems.append(f"{label}: max_length must be a whole number from 1 to {MAX_TEXT_LENGTH}")
    minimum = _number(raw.get("minimum"), f"{label}: minimum", problems)
    maximum = _number(raw.get("maximum"), f"{label}: maximum", problems)
    if ("minimum" in raw or "maximum" in raw) and kind != "number":
        problems.append(f"{label}: minimum and maximum are only for type number")
    if minimum is not None and maximum is not None and minimum > maximum:
        problems.append(f"{label}: minimum is above maximum")
    alert = _alert(raw.get("alert"), kind, choices, label, problems)
    if len(problems) > start:
        return None
    assert isinstance(name, str) and isinstance(kind, str) and description is not None
    return PlanField(name=name, type=kind, description=description, choices=choices, required=bool(required),
                     alert=alert, max_length=max_length, minimum=minimum, maximum=maximum)


def _alert(raw: Any, kind: Any, choices: tuple[str, ...], label: str, problems: list[str]) -> tuple[str | bool, ...]:
    if raw is None:
        return ()
    values = raw if isinstance(raw, list) else [raw]
    if kind == "boolean" and all(isinstance(v, bool) for v in values) and values:
        return tuple(values)
    if kind == "choice" and values and all(isinstance(v, str) for v in values):
        wrong = [v for v in values if v not in choices]
        if choices and wrong:
            problems.append(f"{label}: alert value(s) {', '.join(map(repr, wrong))} are not among the choices")
        return tuple(values)
    problems.append(f"{label}: alert must list true/false (a boolean field) or some of the choices (a choice field)")
    return ()


def parse_plan(data: Any) -> AnalysisPlan:
    """A plan from its parsed file (a mapping); ``PlanError`` with every problem found."""
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise PlanError(["the plan must be a mapping with 'fields' (and optionally name, instructions, "
                         "success_criteria)"])
    unknown = sorted(str(k) for k in data if k not in _PLAN_KEYS)
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_PLAN_KEYS))})")
    name = data.get("name", "custom")
    if not isinstance(name, str) or not CHOICE.fullmatch(name):
        problems.append("name: must be a short lowercase identifier (a-z, 0-9, _ and -)")
    instructions = _text(data.get("instructions"), "instructions", problems, limit=2000, required=False)
    raw_fields = data.get("fields")
    fields: list[PlanField] = []
    if not isinstance(raw_fields, list) or not 1 <= len(raw_fields) <= MAX_FIELDS:
        problems.append(f"fields: must be a list of 1 to {MAX_FIELDS} fields")
    else:
        for index, raw in enumerate(raw_fields):
            parsed = _field(raw, index, problems)
            if parsed is not None:
                fields.append(parsed)
        seen: set[str] = set()
        for parsed in fields:
            if parsed.name in seen:
                problems.append(f"fields: the name {parsed.name!r} is used twice")
            seen.add(parsed.name)
    criteria_raw = data.get("success_criteria", [])
    criteria: list[str] = []
    if not isinstance(criteria_raw, list) or len(criteria_raw) > MAX_CRITERIA:
        problems.append(f"success_criteria: must be a list of at most {MAX_CRITERIA} texts")
    else:
        for index, item in enumerate(criteria_raw):
            text = _text(item, f"success_criteria[{index}]", problems, limit=MAX_DESCRIPTION)
            if text is not None:
                criteria.append(text)
    if problems:
        raise PlanError(problems)
    assert isinstance(name, str)
    return AnalysisPlan(fields=tuple(fields), name=name, instructions=instructions, success_criteria=tuple(criteria))


def read_plan_file(path: Path) -> Any:
    """The file's data: JSON for ``.json``, YAML otherwise (``yaml.safe_load``: no tags, no objects).
    ``PlanError`` when it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise PlanError([f"cannot read {path}: {reason}"]) from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except ValueError as error:
            raise PlanError([f"{path} is not valid JSON: {error}"]) from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PlanError([f"{path} is not valid YAML: {' '.join(str(error).split())[:300]}"]) from None


def load_plan(path: str | Path | None = None) -> AnalysisPlan:
    """The plan in ``path`` (None: the GoCare plan shipped with the package); ``PlanError`` otherwise."""
    return parse_plan(read_plan_file(DEFAULT_PLAN_FILE if path is None else Path(path)))


@functools.lru_cache(maxsize=4)
def configured_plan(path: str | None) -> AnalysisPlan:
    """``GOCARE_CALL_ANALYSIS_PLAN``'s plan (the settings checked it at start), read once per process."""
    return load_plan(path)


# --- the model's answer --------------------------------------------------------------------------------
def json_schema(plan: AnalysisPlan) -> dict[str, Any]:
    """The answer's JSON schema, in the strict subset OpenAI's structured outputs accept: every property
    required (an optional field is nullable instead), no other properties."""
    properties: dict[str, Any] = {}
    for f in plan.fields:
        base = {"text": "string", "boolean": "boolean", "number": "number", "choice": "string"}[f.type]
        prop: dict[str, Any] = {"type": base if f.required else [base, "null"], "description": f.description}
        if f.type == "choice":
            prop["enum"] = [*f.choices] if f.required else [*f.choices, None]
        properties[f.name] = prop
    if plan.success_criteria:
        properties["success"] = {"type": "boolean",
                                 "description": "true when the call met every success criterion, else false"}
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def response_format(plan: AnalysisPlan) -> dict[str, Any]:
    """The chat completions ``response_format`` asking for ``json_schema(plan)``."""
    return {"type": "json_schema",
            "json_schema": {"name": "call_analysis", "strict": True, "schema": json_schema(plan)}}


class InvalidAnswer(ValueError):
    """The model's answer does not fit the plan; the message says why (it goes back to the model once)."""


def _strip_fence(text: str) -> str:
    """Some models wrap JSON in a Markdown code fence even when asked for JSON only."""
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
        body = body.rsplit("```", 1)[0]
    return body.strip()


def check_answer(plan: AnalysisPlan, text: str, *, clean: Any = None) -> tuple[dict[str, Value], bool | None]:
    """The values the answer gives each field, and ``success`` (None without success criteria).
    ``clean`` (``str -> str``) is applied to every text value (the records' masking)."""
    try:
        data = json.loads(_strip_fence(text))
    except ValueError:
        raise InvalidAnswer("the answer is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidAnswer("the answer is not a JSON object")
    allowed = set(plan.names) | ({"success"} if plan.success_criteria else set())
    extra = sorted(k for k in data if k not in allowed)
    if extra:
        # named only when they are identifiers: the reason is logged and stored, a key could be anything
        shown = [k if NAME.fullmatch(k) else "(not an identifier)" for k in extra[:5]]
        raise InvalidAnswer(f"unknown key(s): {', '.join(shown)}")
    values: dict[str, Value] = {}
    for f in plan.fields:
        values[f.name] = _value(f, data.get(f.name), clean=clean)
    success: bool | None = None
    if plan.success_criteria:
        success = data.get("success")
        if not isinstance(success, bool):
            raise InvalidAnswer("success: must be true or false")
    return values, success


def _value(f: PlanField, raw: Any, *, clean: Any) -> Value:
    if raw is None:
        if f.required:
            raise InvalidAnswer(f"{f.name}: missing")
        return None
    if f.type == "boolean":
        if not isinstance(raw, bool):
            raise InvalidAnswer(f"{f.name}: must be true or false")
        return raw
    if f.type == "number":
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise InvalidAnswer(f"{f.name}: must be a number")
        if (f.minimum is not None and raw < f.minimum) or (f.maximum is not None and raw > f.maximum):
            raise InvalidAnswer(f"{f.name}: out of range")
        return float(raw)
    if not isinstance(raw, str):
        raise InvalidAnswer(f"{f.name}: must be a string")
    if f.type == "choice":
        if raw not in f.choices:
            raise InvalidAnswer(f"{f.name}: must be one of {', '.join(f.choices)}")
        return raw
    text = " ".join(raw.split())
    if not text:
        if f.required:
            raise InvalidAnswer(f"{f.name}: empty")
        return None
    if clean is not None:
        text = clean(text)
    return text if len(text) <= f.max_length else text[: f.max_length - 1] + "\u2026"


def alerts(plan: AnalysisPlan, values: Mapping[str, Value]) -> list[dict[str, Value]]:
    """The plan's alert values this analysis has: ``[{"field": ..., "value": ...}]``."""
    return [{"field": f.name, "value": values.get(f.name)} for f in plan.fields
            if f.alert and values.get(f.name) is not None and values.get(f.name) in f.alert
            and isinstance(values.get(f.name), bool) == (f.type == "boolean")]


# --- filters ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Condition:
    """One ``FIELD=VALUE`` filter: equal for boolean, number and choice; a case-insensitive "contains" for
    text."""

    field: str
    type: str
    value: str | bool | float


_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")


def parse_where(plan: AnalysisPlan, expression: str) -> Condition:
    """``follow_up_needed=true`` -> a condition; ``ValueError`` naming the problem and what is accepted."""
    name, sep, raw = expression.partition("=")
    name, raw = name.strip(), raw.strip()
    if not sep or not name:
        raise ValueError(f"{expression!r} is not FIELD=VALUE")
    f = plan.field(name)
    if f is None:
        raise ValueError(f"{name!r} is not a field of the analysis plan ({', '.join(plan.names)})")
    if f.type == "boolean":
        if raw.lower() in _TRUE:
            return Condition(f.name, f.type, True)
        if raw.lower() in _FALSE:
            return Condition(f.name, f.type, False)
        raise ValueError(f"{name}: {raw!r} is not true or false")
    if f.type == "number":
        try:
            number = float(raw)
        except ValueError:
            raise ValueError(f"{name}: {raw!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{name}: {raw!r} is not a number")
        return Condition(f.name, f.type, number)
    if f.type == "choice":
        if raw not in f.choices:
            raise ValueError(f"{name}: {raw!r} is not one of {', '.join(f.choices)}")
        return Condition(f.name, f.type, raw)
    if not raw or len(raw) > 200:
        raise ValueError(f"{name}: give 1 to 200 characters of text to look for")
    return Condition(f.name, f.type, raw)


def parse_wheres(plan: AnalysisPlan, expressions: Sequence[str]) -> tuple[Condition, ...]:
    return tuple(parse_where(plan, e) for e in expressions)
