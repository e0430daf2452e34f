"""Shared fixtures. Services are real: the fixture modules start a throwaway PostgreSQL and the
local control plane (or use KUBECONFIG), and fail loudly when they cannot, never skip."""

pytest_plugins = [
    "fixtures.postgres",
    "fixtures.kube",
]
