"""`python -m stacks.settings`: docs/settings.md's table, from the model."""

from stacks.settings.table import settings_table

print(settings_table())
