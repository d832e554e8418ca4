"""`migrate` is `migrate_schemas` in a django-tenants project (django-tenants overrides it the same way); this makes
it the fast one too, so `manage.py migrate` (and test database creation) take the same path."""
from tenants.management.commands.migrate_schemas import Command

__all__ = ["Command"]
