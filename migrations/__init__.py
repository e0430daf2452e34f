"""Alembic migrations of the registry schema, packaged as agent_registry._migrations.

Run them with `agentreg migrate` or `agent_registry.registry.migrate(url)`."""
