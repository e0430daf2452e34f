"""agent-registry: a Kubernetes operator for fleets of AI agents with sandboxed Lua behaviors."""

__version__ = "0.1.0"
