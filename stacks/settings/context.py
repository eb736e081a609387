"""Reading cdk.json context (and `-c` values): settings-like keys only (camelCase; feature
flags and CLI keys are not settings), unknown keys with a did-you-mean, then the model, then
the rules across values, and every problem in one SettingsError."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from stacks.settings.errors import (
    SettingsError,
    describe_errors,
)
from stacks.settings.model import (
    FIELDS_BY_KEY,
    SETTING_KEYS,
    SettingsModel,
)
from stacks.settings.rules import (
    problems_across_fields,
)
from stacks.settings.types import (
    SETTING_LIKE_KEY,
    cli_json,
)


def parse_settings(context: Mapping[str, Any]) -> SettingsModel:
    """The validated model; SettingsError names every bad key, its value and what is allowed."""
    problems: list[str] = []
    given: dict[str, Any] = {}
    for key, value in context.items():
        if not SETTING_LIKE_KEY.match(key):
            continue
        if key not in FIELDS_BY_KEY:
            close = difflib.get_close_matches(key, SETTING_KEYS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "known settings: " + ", ".join(SETTING_KEYS)
            problems.append(f"{key}: unknown setting; {hint}")
        elif value is not None:  # null: the default, as if unset
            given[key] = value
    refused: set[str] = set()
    team_indexes: list[int] | None = None
    try:
        model = SettingsModel.model_validate(given)
    except ValidationError as error:
        problems += describe_errors(error, given)
        refused = {str(item["loc"][0]) for item in error.errors()}
        # The rules across fields still run on what was valid, so one message names everything:
        # the other keys, and the teams that passed on their own.
        valid = {k: v for k, v in given.items() if k not in refused}
        bad_teams = {int(item["loc"][1]) for item in error.errors() if item["loc"][0] == "batchTeams"
                     and len(item["loc"]) > 1}
        if bad_teams and all(len(item["loc"]) > 1 for item in error.errors() if item["loc"][0] == "batchTeams"):
            teams = cli_json(given["batchTeams"])
            team_indexes = [i for i in range(len(teams)) if i not in bad_teams]
            valid["batchTeams"] = [teams[i] for i in team_indexes]
            refused.discard("batchTeams")
        model = SettingsModel.model_validate(valid)
    problems += problems_across_fields(model, refused, team_indexes)
    if problems:
        raise SettingsError(problems)
    return model
