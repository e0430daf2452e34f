"""Package discovery only; everything else is in pyproject.toml.

The Alembic migrations live in migrations/ at the top of the repository and ship in the wheel as
`agent_registry._migrations` (mapped in pyproject's package-dir), so that `agentreg migrate` works
from an installed wheel, e.g. in the operator image's init container.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages("operator", include=["agent_registry", "agent_registry.*"]),
        "agent_registry._migrations",
        "agent_registry._migrations.versions",
    ]
)
