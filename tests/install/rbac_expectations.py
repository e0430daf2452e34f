"""What the operator's ServiceAccount may do: exactly this, nothing more.

Source: the table in operator/agent_registry/controller/__init__.py (the controller's own account of
the calls it makes), minus the webhook row: the chart owns the ValidatingWebhookConfiguration
(service reference + CA bundle), so the operator needs no admissionregistration access.

The chart's Roles/ClusterRoles must grant exactly these (tests/install/test_chart.py) and the
apiserver must answer `kubectl auth can-i` accordingly with the ServiceAccount's own token,
both ways (tests/install/test_cluster.py).
"""

from __future__ import annotations

# (apiGroup, resource[/subresource]) -> verbs. "" is the core group.
Rules = dict[tuple[str, str], frozenset[str]]

GROUP = "agents.singularity.dev"

# Per served namespace (a Role each, or a ClusterRole with watch.allNamespaces=true).
NAMESPACED: Rules = {
    # list and watch (agent_watch.py, kopf for the others), and patch metadata (kopf's finalizer
    # and progress annotations; the old finalizer removed from Agents).
    (GROUP, "agents"): frozenset({"get", "list", "watch", "patch"}),
    (GROUP, "agentbehaviors"): frozenset({"list", "watch", "patch"}),
    (GROUP, "behaviorpolicies"): frozenset({"list", "watch", "patch"}),
    (GROUP, "behaviorexperiments"): frozenset({"list", "watch", "patch"}),
    # status write-back.
    (GROUP, "agents/status"): frozenset({"patch"}),
    (GROUP, "agentbehaviors/status"): frozenset({"patch"}),
    (GROUP, "behaviorpolicies/status"): frozenset({"patch"}),
    (GROUP, "behaviorexperiments/status"): frozenset({"patch"}),
    # the behavior ConfigMap per Agent (server-side apply), and the Deployment from
    # Agent.spec.template (applied; read and deleted when the template goes away).
    ("", "configmaps"): frozenset({"create", "patch"}),
    ("apps", "deployments"): frozenset({"get", "create", "patch", "delete"}),
    # kopf's events.
    ("", "events"): frozenset({"create"}),
}

# Leader election (--leader-elect): the Lease, in the release namespace only.
LEADER_ELECTION: Rules = {
    ("coordination.k8s.io", "leases"): frozenset({"get", "create", "update"}),
}

# Cluster-scoped, whatever the watch mode.
CLUSTER: Rules = {
    ("authentication.k8s.io", "tokenreviews"): frozenset({"create"}),
    ("authorization.k8s.io", "subjectaccessreviews"): frozenset({"create"}),
}

ALL_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")

# Things an operator like this must never be able to touch (checked as "no" for every verb).
FORBIDDEN_NAMESPACED: tuple[tuple[str, str], ...] = (
    ("", "secrets"),
    ("", "pods"),
    ("", "pods/exec"),
    ("", "serviceaccounts"),
    ("", "serviceaccounts/token"),
    ("", "services"),
    ("apps", "statefulsets"),
    ("apps", "daemonsets"),
    ("rbac.authorization.k8s.io", "roles"),
    ("rbac.authorization.k8s.io", "rolebindings"),
)
FORBIDDEN_CLUSTER: tuple[tuple[str, str], ...] = (
    ("", "nodes"),
    ("", "persistentvolumes"),
    ("rbac.authorization.k8s.io", "clusterroles"),
    ("rbac.authorization.k8s.io", "clusterrolebindings"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("", "namespaces"),
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
    ("certificates.k8s.io", "certificatesigningrequests"),
)


def rules_to_table(rules: list[dict[str, list[str]]]) -> Rules:
    """Flatten RBAC PolicyRules into (group, resource) -> verbs; wildcards are refused outright."""
    table: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        assert "resourceNames" not in rule, rule
        assert "nonResourceURLs" not in rule, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                verbs = set(rule["verbs"])
                assert "*" not in verbs, rule
                assert "*" not in (group, resource), rule
                table.setdefault((group, resource), set()).update(verbs)
    return {k: frozenset(v) for k, v in table.items()}
