"""How a bad setting is said: one `SettingsError` whose message names each bad key, its value
and what is allowed, from pydantic's errors or from the rules across values."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from typing import Any, get_args

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from stacks.settings.model import (
    FIELDS_BY_KEY,
    TEAM_FIELDS_BY_KEY,
)
from stacks.settings.types import (
    NotJson,
    cli_integer,
    cli_number,
)


class SettingsError(ValueError):
    """One or more settings are invalid; the message lists every problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"Invalid settings ({len(problems)} problem{'s' if len(problems) > 1 else ''}). "
            f"Fix them in cdk.json or with -c key=value:\n{lines}"
        )




def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else json.dumps(value)


def _bounds(field: FieldInfo) -> tuple[Any, Any]:
    """(ge, le) of a field, looking through `X | None` and nested Annotated metadata."""
    found: list[Any] = []

    def collect(metadata: Iterable[Any]) -> None:
        for item in metadata:
            found.append(item)
            if isinstance(item, FieldInfo):
                collect(item.metadata)

    collect(field.metadata)
    for arg in get_args(field.annotation):
        collect(getattr(arg, "__metadata__", ()))
    low = next((m.ge for m in found if getattr(m, "ge", None) is not None), None)
    high = next((m.le for m in found if getattr(m, "le", None) is not None), None)
    return low, high


def _type_rule(error_type: str, field: FieldInfo, from_json: bool) -> str | None:
    """What a field allows, for an error of its type or range (None: not such an error)."""
    low, high = _bounds(field)
    text = " (a JSON number, not a string)" if from_json else ""
    if error_type in ("int_type", "int_parsing", "int_from_float"):
        return f"must be a whole number from {low} to {high}{text}"
    if error_type in ("float_type", "float_parsing"):
        return f"must be a number from {low:g} to {high:g}"
    if error_type in ("greater_than_equal", "less_than_equal"):
        return f"must be from {low:g} to {high:g}" if isinstance(low, float) else f"must be from {low} to {high}"
    if error_type in ("bool_type", "bool_parsing"):
        return "must be true or false"
    if error_type == "string_type":
        return "must be a string"
    if error_type in ("tuple_type", "list_type"):
        return "must be a list of strings (JSON list or comma-separated)"
    return None


def describe_errors(error: ValidationError, given: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    unknown_team_fields: dict[int, list[str]] = {}
    for item in error.errors(include_url=False):
        loc, kind = item["loc"], item["type"]
        key = str(loc[0])
        message = item["msg"].removeprefix("Value error, ")
        if key == "batchTeams" and len(loc) >= 2:
            index = int(loc[1])
            where = f"batchTeams[{index}]"
            if len(loc) == 2:
                problems.append(f"{where}={_show(item['input'])}: must be a team object (see docs/settings.md)")
            elif kind == "extra_forbidden":
                unknown_team_fields.setdefault(index, []).append(str(loc[2]))
            elif kind == "missing":
                problems.append(f"{where}.{loc[2]}: required")
            else:
                field = TEAM_FIELDS_BY_KEY[str(loc[2])]
                rule = _type_rule(kind, field, from_json=isinstance(item["input"], str)) or message
                problems.append(f"{where}.{loc[2]}={_show(item['input'])}: {rule}")
            continue
        if kind == "value_error" and isinstance(item.get("ctx", {}).get("error"), NotJson):
            problems.append(f"{key}={_show(given[key])}: {message}")
            continue
        if key == "batchTeams":
            problems.append(f"{key}={_show(given[key])}: must be a JSON list of team objects")
            continue
        if kind == "string_type" and len(loc) > 1:  # an item of a list
            problems.append(f"{key}={_show(given[key])}: must be a list of strings (JSON list or comma-separated)")
            continue
        allowed = _type_rule(kind, FIELDS_BY_KEY[key], from_json=False) or message
        value = item["input"]
        if kind in ("greater_than_equal", "less_than_equal"):  # show a `-c` number as the number it is
            value = cli_number(cli_integer(value))
        problems.append(f"{key}={_show(value)}: {allowed}")
    for index, names in unknown_team_fields.items():
        hints = [
            f"{name} (did you mean {close[0]!r}?)"
            if (close := difflib.get_close_matches(name, TEAM_FIELDS_BY_KEY, n=1, cutoff=0.8))
            else name
            for name in names
        ]
        problems.append(
            f"batchTeams[{index}]: unknown field(s) {', '.join(hints)}; allowed: {', '.join(TEAM_FIELDS_BY_KEY)}"
        )
    return problems
