"""The Helm chart rendered offline: lint, schema, and the properties the issue asks for
(non-root, read-only root filesystem, Recreate, kopf liveness, migrations first, exact RBAC, webhook
certificate, CRDs identical to crds/)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from install.chart import (
    CHART,
    CRDS,
    Manifest,
    crd_files,
    find,
    helm,
    one,
    render,
    template_text,
)
from install.rbac_expectations import CLUSTER, LEADER_ELECTION, NAMESPACED, rules_to_table

# The first helm call builds helm from the Go module proxy on a fresh machine (minutes; cached):
# more than the suite's default per-test timeout. Every helm call has its own 300 s timeout.
pytestmark = pytest.mark.timeout(1800)

FULLNAME = "agent-registry"
POSTGRES = {"database": {"type": "postgres", "postgres": {"existingSecret": "registry-db"}}}
EVERYTHING_ON = {
    **POSTGRES,
    "watch": {"allNamespaces": True},
    "webhook": {"enabled": True},
    "metrics": {"serviceMonitor": {"enabled": True}},
}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "postgres": POSTGRES,
    "namespaces": {"watch": {"namespaces": ["team-a", "team-b"]}},
    "all-namespaces-webhook-metrics": EVERYTHING_ON,
    "cert-manager": {"webhook": {"enabled": True, "certManager": {"enabled": True}}},
    "sqlite-emptydir": {"database": {"sqlite": {"persistence": {"enabled": False}}}},
    "no-migrate-digest": {
        "database": {"migrate": False},
        "image": {"digest": "sha256:" + "0" * 64},
    },
}


def served(manifests: list[Manifest], kind: str) -> list[Manifest]:
    """The Roles (RoleBindings) of the served namespaces: all but leader election's."""
    return [
        m for m in find(manifests, kind) if not m["metadata"]["name"].endswith("-leader-election")
    ]


def operator_container(manifests: list[Manifest]) -> dict[str, Any]:
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "operator"]
    assert isinstance(container, dict), container
    return container


def flag(container: dict[str, Any], name: str) -> str:
    values = [a.split("=", 1)[1] for a in container["args"] if a.startswith(f"{name}=")]
    assert len(values) == 1, (name, container["args"])
    (value,) = values
    assert isinstance(value, str), (name, value)
    return value


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_helm_lint_strict(values: dict[str, Any], tmp_path: Any) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(json.dumps(values))
    done = helm("lint", "--strict", str(CHART), "-f", str(values_file), check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"replicaCount": 2}, "additional properties 'replicaCount' not allowed"),
        ({"database": {"type": "mysql"}}, "/database/type"),
        ({"watch": {"namespaces": ["Team_A"]}}, "/watch/namespaces/0"),
        ({"webhook": {"failurePolicy": "Maybe"}}, "/webhook/failurePolicy"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        ({"database": {"type": "postgres"}}, "needs database.postgres.existingSecret"),
        ({"watch": {"allNamespaces": True, "namespaces": ["a"]}}, "exclusive"),
        ({"health": {"port": 8080}}, "health.port must differ"),
        ({"replicas": 2}, "replicas > 1 needs database.type=postgres"),
        ({**POSTGRES, "replicas": 2, "leaderElection": {"enabled": False}}, "needs leaderElection"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(values: dict[str, Any], error: str) -> None:
    done = template_text(values, check=False)
    assert done.returncode != 0
    assert error in done.stderr, done.stderr


def test_chart_crds_are_identical_to_crds_dir() -> None:
    expected = crd_files(CRDS)
    assert expected, "crds/ is empty: run `make crds`"
    assert crd_files(CHART / "crds") == expected, "run hack/helm/render-manifests.py"


def test_operator_pod_is_hardened() -> None:
    manifests = render()
    deployment = one(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    for container in pod["containers"] + pod.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"]
        assert container["resources"]["limits"]["memory"]
        # With a read-only root, every writable path must be a volume.
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts


def test_liveness_probe_is_kopfs_health_endpoint() -> None:
    container = operator_container(render())
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert flag(container, "--health-listen") == f"0.0.0.0:{ports['health']}"
    assert container["readinessProbe"]["httpGet"]["port"] == "http"
    assert flag(container, "--api-listen") == f"0.0.0.0:{ports['http']}"


def test_sqlite_default_runs_migrations_then_the_operator_on_a_pvc() -> None:
    manifests = render()
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    (migrate,) = pod["initContainers"]
    assert migrate["command"] == ["agentreg", "migrate"]
    operator = operator_container(manifests)
    assert operator["command"] == ["agentreg", "run"]
    url = {
        "name": "AGENTREG_DATABASE_URL",
        "value": "sqlite+aiosqlite:////var/lib/agent-registry/agent-registry.db",
    }
    assert url in migrate["env"]
    assert url in operator["env"]
    pvc = one(manifests, "PersistentVolumeClaim")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    for container in (migrate, operator):
        assert {"name": "data", "mountPath": "/var/lib/agent-registry"} in container["volumeMounts"]
    # The registry survives `helm uninstall`.
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_postgres_url_comes_from_a_secret_and_needs_no_volume() -> None:
    manifests = render(POSTGRES)
    assert not find(manifests, "PersistentVolumeClaim")
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    expected = {
        "name": "AGENTREG_DATABASE_URL",
        "valueFrom": {"secretKeyRef": {"name": "registry-db", "key": "database-url"}},
    }
    for container in pod["containers"] + pod["initContainers"]:
        assert expected in container["env"]
        assert "data" not in {m["name"] for m in container["volumeMounts"]}


def test_default_rbac_is_a_role_in_the_release_namespace_plus_cluster_minimum() -> None:
    manifests = render()
    (role,) = served(manifests, "Role")
    assert role["metadata"]["namespace"] == "agent-registry"
    assert rules_to_table(role["rules"]) == NAMESPACED
    (cluster_role,) = find(manifests, "ClusterRole")
    assert rules_to_table(cluster_role["rules"]) == CLUSTER
    sa = one(manifests, "ServiceAccount")
    for binding in find(manifests, "RoleBinding") + find(manifests, "ClusterRoleBinding"):
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": sa["metadata"]["name"],
                "namespace": "agent-registry",
            }
        ]
    assert operator_container(manifests)["args"][0] == "--namespace=agent-registry"


def test_listed_namespaces_get_one_role_each() -> None:
    manifests = render({"watch": {"namespaces": ["team-a", "team-b"]}})
    roles = served(manifests, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert all(rules_to_table(r["rules"]) == NAMESPACED for r in roles)
    bindings = served(manifests, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    args = operator_container(manifests)["args"]
    assert [a for a in args if a.startswith("--namespace")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]
    assert "--all-namespaces" not in args


def test_all_namespaces_uses_a_cluster_role() -> None:
    manifests = render({"watch": {"allNamespaces": True}})
    assert not served(manifests, "Role")
    assert not served(manifests, "RoleBinding")
    tables = sorted((rules_to_table(r["rules"]) for r in find(manifests, "ClusterRole")), key=len)
    assert tables == sorted([CLUSTER, NAMESPACED], key=len)
    assert "--all-namespaces" in operator_container(manifests)["args"]


def test_rbac_can_be_left_to_the_user() -> None:
    manifests = render({"rbac": {"create": False}})
    for kind in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"):
        assert not find(manifests, kind)


def test_service_selects_the_operator_pod_and_its_ports() -> None:
    manifests = render(EVERYTHING_ON)
    service = one(manifests, "Service")
    deployment = one(manifests, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    port_names = {p["name"] for p in operator_container(manifests)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    monitor = one(manifests, "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_webhook_certificate_is_valid_for_the_service_and_signed_by_the_ca_bundle() -> None:
    manifests = render({"webhook": {"enabled": True}})
    secret = one(manifests, "Secret")
    config = one(manifests, "ValidatingWebhookConfiguration")
    hook, experiment_hook = config["webhooks"]
    client = hook["clientConfig"]
    service = one(manifests, "Service")
    assert client["service"]["name"] == service["metadata"]["name"]
    assert client["service"]["port"] in {p["port"] for p in service["spec"]["ports"]}
    assert client["caBundle"] == secret["data"]["ca.crt"]

    ca = x509.load_pem_x509_certificate(base64.b64decode(client["caBundle"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{FULLNAME}.agent-registry.svc" in san.get_values_for_type(x509.DNSName)
    assert cert.issuer == ca.subject
    public_key = ca.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    if isinstance(public_key, rsa.RSAPublicKey):
        assert cert.signature_hash_algorithm is not None
        public_key.verify(
            cert.signature,
            cert.tbs_certificate_bytes,
            padding.PKCS1v15(),
            cert.signature_hash_algorithm,
        )
    assert cert.not_valid_after_utc > datetime.now(UTC)

    # The operator serves with that very Secret.
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["webhook-tls"]["secret"]["secretName"] == secret["metadata"]["name"]
    container = operator_container(manifests)
    assert "--webhook" in container["args"]
    assert hook["rules"][0]["resources"] == ["agentbehaviors"]
    # kopf serves each admission handler at /<handler id> (controller/operator.py).
    assert hook["clientConfig"]["service"]["path"] == "/lua"
    assert experiment_hook["rules"][0]["resources"] == ["behaviorexperiments"]
    assert experiment_hook["clientConfig"]["service"]["path"] == "/experiment"
    assert experiment_hook["clientConfig"]["caBundle"] == client["caBundle"]
    # Only the served namespaces are intercepted.
    assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == ["agent-registry"]


def test_webhook_with_cert_manager_injects_the_ca() -> None:
    manifests = render({"webhook": {"enabled": True, "certManager": {"enabled": True}}})
    certificate = one(manifests, "Certificate")
    config = one(manifests, "ValidatingWebhookConfiguration")
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"agent-registry/{certificate['metadata']['name']}"
    )
    assert "caBundle" not in config["webhooks"][0]["clientConfig"]
    assert one(manifests, "Issuer")["spec"] == {"selfSigned": {}}
    assert not find(manifests, "Secret")


def test_webhook_off_by_default() -> None:
    manifests = render()
    assert not find(manifests, "ValidatingWebhookConfiguration")
    assert "--no-webhook" in operator_container(manifests)["args"]


@pytest.mark.parametrize("values", [{}, {"watch": {"namespaces": ["team-a"]}}, POSTGRES])
def test_leader_election_lease_role_is_in_the_release_namespace_only(
    values: dict[str, Any],
) -> None:
    manifests = render(values)
    (role,) = [r for r in find(manifests, "Role") if r not in served(manifests, "Role")]
    assert role["metadata"]["namespace"] == "agent-registry"
    assert rules_to_table(role["rules"]) == LEADER_ELECTION
    (binding,) = [
        b for b in find(manifests, "RoleBinding") if b not in served(manifests, "RoleBinding")
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    args = operator_container(manifests)["args"]
    assert "--leader-elect" in args
    assert flag(operator_container(manifests), "--lease-duration") == "15"
    assert "--renew-deadline=10" in args


def test_replicas_with_leader_election_roll_on_postgres_and_recreate_on_sqlite() -> None:
    rolling = one(render({**POSTGRES, "replicas": 3}), "Deployment")["spec"]
    assert rolling["replicas"] == 3
    assert rolling["strategy"] == {"type": "RollingUpdate"}
    single = one(render(), "Deployment")["spec"]
    assert single["replicas"] == 1
    assert single["strategy"] == {"type": "Recreate"}


def test_leader_election_can_be_turned_off() -> None:
    manifests = render({**POSTGRES, "leaderElection": {"enabled": False}})
    assert find(manifests, "Role") == served(manifests, "Role")
    assert "--no-leader-elect" in operator_container(manifests)["args"]
    assert one(manifests, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
