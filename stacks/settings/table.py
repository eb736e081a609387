"""The settings table of docs/settings.md, printed by `python -m stacks.settings`: every key, its default
(JSON) and what it allows, from the model (a test keeps the page equal to it)."""

from __future__ import annotations

import json

from stacks.settings.model import (
    FIELDS_BY_KEY,
)


def settings_table() -> str:
    """The settings table: every key, its default (JSON) and what it allows."""
    rows = ["| key | default | allowed |", "|---|---|---|"]
    for key, field in FIELDS_BY_KEY.items():
        default = field.default
        shown = (
            "unset" if default is None else f"`{json.dumps(list(default) if isinstance(default, tuple) else default)}`"
        )
        rows.append(f"| `{key}` | {shown} | {field.description} |")
    return "\n".join(rows)
