"""Typed, validated settings: the only bridge between cdk.json context and the stacks.

`SettingsModel` (model.py) declares every setting once: its context key, type, default and
what it allows; the defaults are the library's (ray_serve_ha). cdk.json holds only what a
user changes (and the CDK feature flags); an unset key takes the model's default.
`Settings.from_context` checks every value (types.py) and every rule across values
(rules.py) and returns the frozen tree for the stacks (tree.py), or raises `SettingsError`
whose one message names each bad key, its value and what is allowed (errors.py). Nothing
below app.py reads context or the environment.

`python -m stacks.settings` prints docs/settings.md's table from the model (table.py).
"""

from stacks.settings.context import parse_settings
from stacks.settings.errors import SettingsError
from stacks.settings.model import SETTING_KEYS, BatchTeamSettings, SettingsModel, team_image
from stacks.settings.table import settings_table
from stacks.settings.tree import (
    ClusterSettings,
    DeploymentEnvironment,
    ExistingClusterSettings,
    NetworkSettings,
    OperationsSettings,
    PipelineSettings,
    SecretsSettings,
    ServingSettings,
    Settings,
    batch_team,
    settings_tree,
)
from stacks.settings.types import MIN_EXISTING_SUBNET_AZS

__all__ = [
    "MIN_EXISTING_SUBNET_AZS",
    "SETTING_KEYS",
    "BatchTeamSettings",
    "ClusterSettings",
    "DeploymentEnvironment",
    "ExistingClusterSettings",
    "NetworkSettings",
    "OperationsSettings",
    "PipelineSettings",
    "SecretsSettings",
    "ServingSettings",
    "Settings",
    "SettingsError",
    "SettingsModel",
    "batch_team",
    "parse_settings",
    "settings_table",
    "settings_tree",
    "team_image",
]
