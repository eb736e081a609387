"""`python -m stacks.settings`: README's settings table, from the model."""

from stacks.settings.table import settings_table

print(settings_table())
