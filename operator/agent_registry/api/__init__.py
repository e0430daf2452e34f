"""The registry HTTP API served by the operator: agents report outcomes, people read stats.

    from agent_registry.api import Authenticator, create_app
    app = create_app(registry, Authenticator.from_kubeconfig(kubeconfig), metrics=metrics)

See docs/api.md for the endpoints and the auth model.
"""

from agent_registry.api.access import Identity, ReportAuth
from agent_registry.api.app import ENDPOINTS, MAX_BODY_BYTES, create_app
from agent_registry.api.auth import Authenticator
from agent_registry.api.kube import KubeClient, KubeUnavailable, load_configuration
from agent_registry.api.openapi import OPENAPI_PATH, build_document

__all__ = [
    "ENDPOINTS",
    "MAX_BODY_BYTES",
    "OPENAPI_PATH",
    "Authenticator",
    "Identity",
    "KubeClient",
    "KubeUnavailable",
    "ReportAuth",
    "build_document",
    "create_app",
    "load_configuration",
]
