"""Who a caller is and what it may do: pure rules, no I/O (auth.py does the lookups).

Reports: only a ServiceAccount token, only for an Agent in the token's own namespace, and only
as the Agent's own ServiceAccount: `spec.serviceAccountName`, else the one its pod template
runs as, else the ServiceAccount named like the Agent. Decisions act on reports (policies,
experiments, rollouts), so a neighbour workload of the namespace must not be able to speak for
an Agent. `ReportAuth.NAMESPACE` is the explicit opt-out to the older, weaker rule (any
ServiceAccount of the namespace, unless the Agent sets `spec.serviceAccountName`).
Reads: the caller needs the Kubernetes RBAC permission to read the matching resource
(`get`/`list` on `agents` or `agentbehaviors` of agents.singularity.dev), checked with a
SubjectAccessReview. Whoever may `kubectl get agents` may read the registry's view of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

SERVICE_ACCOUNT_PREFIX: Final = "system:serviceaccount:"
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_NAMESPACE_RE: Final = re.compile(rf"^{_LABEL}$")
_NAME_RE: Final = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")


def is_namespace(value: str) -> bool:
    """A valid Kubernetes namespace (DNS-1123 label)."""
    return len(value) <= 63 and _NAMESPACE_RE.match(value) is not None


def is_object_name(value: str) -> bool:
    """A valid Kubernetes object name (DNS-1123 subdomain)."""
    return len(value) <= 253 and _NAME_RE.match(value) is not None


@dataclass(frozen=True)
class Identity:
    """An authenticated caller, as TokenReview described it."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())

    @property
    def service_account(self) -> tuple[str, str] | None:
        """(namespace, name) when the caller is a ServiceAccount, else None."""
        if not self.username.startswith(SERVICE_ACCOUNT_PREFIX):
            return None
        parts = self.username[len(SERVICE_ACCOUNT_PREFIX) :].split(":")
        if len(parts) != 2 or not all(parts):
            return None
        return parts[0], parts[1]

    @classmethod
    def from_token_review(cls, status: dict[str, Any]) -> Identity | None:
        """The identity in a TokenReview status, or None when not authenticated."""
        if not status.get("authenticated"):
            return None
        user = status.get("user") or {}
        username = user.get("username")
        if not isinstance(username, str) or not username:
            return None
        extra_raw = user.get("extra") or {}
        extra = tuple(sorted((str(k), tuple(str(v) for v in vs)) for k, vs in extra_raw.items()))
        return cls(
            username=username,
            uid=str(user.get("uid") or ""),
            groups=tuple(str(g) for g in user.get("groups") or ()),
            extra=extra,
        )

    def access_review_spec(self, attributes: dict[str, str]) -> dict[str, Any]:
        """The spec of a SubjectAccessReview asking whether this identity may do `attributes`."""
        spec: dict[str, Any] = {
            "user": self.username,
            "groups": list(self.groups),
            "resourceAttributes": attributes,
        }
        if self.uid:
            spec["uid"] = self.uid
        if self.extra:
            spec["extra"] = {key: list(values) for key, values in self.extra}
        return spec


class ReportAuth(Enum):
    """Which ServiceAccounts of the Agent's namespace may report for it."""

    # Only the Agent's own ServiceAccount (see AgentRef.reporter).
    SERVICE_ACCOUNT = "serviceaccount"
    # Any ServiceAccount of the namespace, unless the Agent sets spec.serviceAccountName.
    NAMESPACE = "namespace"


@dataclass(frozen=True)
class AgentRef:
    """What authorization needs to know of an Agent object."""

    namespace: str
    name: str
    service_account_name: str | None
    # spec.template.spec.serviceAccountName: the rendered pods run as it when the template sets it.
    template_service_account: str | None = None

    @property
    def reporter(self) -> tuple[str, str]:
        """(ServiceAccount name, where the name comes from) of the one identity that may report.

        The same order the rendered Deployment's pods get their ServiceAccount in, so an
        operator-run agent is accepted with no configuration: the spec, the template, and
        otherwise a name derived from the Agent alone (never `default`, which every pod of
        the namespace runs as unless told otherwise).
        """
        if self.service_account_name:
            return self.service_account_name, "spec.serviceAccountName"
        if self.template_service_account:
            return self.template_service_account, "spec.template.spec.serviceAccountName"
        return self.name, "the Agent's name: spec.serviceAccountName is not set"

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> AgentRef:
        metadata = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        service_account = spec.get("serviceAccountName")
        template = spec.get("template")
        pod_spec = template.get("spec") if isinstance(template, dict) else None
        template_account = (
            pod_spec.get("serviceAccountName") if isinstance(pod_spec, dict) else None
        )
        return cls(
            namespace=str(metadata.get("namespace", "")),
            name=str(metadata.get("name", "")),
            service_account_name=str(service_account) if service_account else None,
            template_service_account=str(template_account) if template_account else None,
        )


class Verdict(Enum):
    ALLOWED = "allowed"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOWED


def namespace_decision(identity: Identity, namespace: str) -> Decision:
    """The part of the report rule that needs no lookup: a ServiceAccount of that namespace.

    Checked before the Agent is looked up, so a token of another namespace learns nothing
    about which Agents exist here.
    """
    service_account = identity.service_account
    if service_account is None:
        return Decision(Verdict.FORBIDDEN, "only ServiceAccount tokens may report outcomes")
    token_namespace, _ = service_account
    if token_namespace != namespace:
        return Decision(
            Verdict.FORBIDDEN,
            f"a token of namespace {token_namespace!r} may not report for namespace {namespace!r}",
        )
    return Decision(Verdict.ALLOWED, "same namespace")


def report_decision(
    identity: Identity,
    namespace: str,
    agent: AgentRef | None,
    mode: ReportAuth = ReportAuth.SERVICE_ACCOUNT,
) -> Decision:
    """May `identity` report outcomes for the Agent `agent` (None: no such Agent) in `namespace`?"""
    first = namespace_decision(identity, namespace)
    if not first.allowed:
        return first
    if agent is None:
        return Decision(Verdict.NOT_FOUND, "no such Agent")
    service_account = identity.service_account
    assert service_account is not None  # namespace_decision allowed only ServiceAccounts
    _, token_name = service_account
    if mode is ReportAuth.NAMESPACE and agent.service_account_name is None:
        return Decision(Verdict.ALLOWED, "ServiceAccount of the Agent's namespace")
    expected, source = agent.reporter
    if expected != token_name:
        # The refusal names the expected identity: the fix (run as it, or set
        # spec.serviceAccountName) is then obvious from the runtime's log alone.
        return Decision(
            Verdict.FORBIDDEN,
            f"Agent {agent.namespace}/{agent.name} accepts reports only from ServiceAccount "
            f"{namespace}/{expected} ({source}); this token is ServiceAccount "
            f"{namespace}/{token_name}",
        )
    return Decision(Verdict.ALLOWED, f"the Agent's ServiceAccount ({source})")


__all__ = [
    "SERVICE_ACCOUNT_PREFIX",
    "AgentRef",
    "Decision",
    "Identity",
    "ReportAuth",
    "Verdict",
    "is_namespace",
    "is_object_name",
    "namespace_decision",
    "report_decision",
]
