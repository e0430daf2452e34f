"""The apiserver calls a validating admission webhook on https://127.0.0.1:PORT with a caBundle,
as it will call the operator's kopf webhook, and enforces its answer."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent_registry.devcluster import KubeCluster, KubectlError, pki
from controlplane.helpers import apply

pytestmark = pytest.mark.kube

DENIAL = "color red is not allowed here (test webhook)"


class _Handler(BaseHTTPRequestHandler):
    calls: list[str] = []

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        name = request["object"]["metadata"]["name"]
        self.calls.append(name)
        allowed = request["object"].get("data", {}).get("color") != "red"
        response: dict[str, Any] = {"uid": request["uid"], "allowed": allowed}
        if not allowed:
            response["status"] = {"code": 403, "message": DENIAL}
        body = json.dumps(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def webhook_server(tmp_path: Path) -> Iterator[tuple[str, bytes, list[str]]]:
    """(url, CA bundle PEM, names of the objects reviewed)."""
    files = pki.generate(tmp_path / "pki")  # serving cert for 127.0.0.1, signed by its own CA
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(files.serving_cert), str(files.serving_key))
    calls: list[str] = []
    handler = type("Handler", (_Handler,), {"calls": calls})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield (
            f"https://127.0.0.1:{server.server_port}/validate",
            files.ca_cert.read_bytes(),
            calls,
        )
    finally:
        server.shutdown()
        server.server_close()


def test_a_validating_webhook_is_called_and_enforced(
    kube_cluster: KubeCluster, namespace: str, webhook_server: tuple[str, bytes, list[str]]
) -> None:
    url, ca_bundle, calls = webhook_server
    config_name = f"deny-red-{namespace}"
    apply(
        kube_cluster,
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": config_name},
            "webhooks": [
                {
                    "name": "deny-red.controlplane.test.agentreg.dev",
                    "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_bundle).decode()},
                    "rules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["configmaps"],
                        }
                    ],
                    # Only this test's namespace: other tests share the cluster.
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": namespace}
                    },
                    "failurePolicy": "Fail",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "timeoutSeconds": 5,
                }
            ],
        },
    )
    try:
        # The apiserver picks up webhook configurations through an informer: a moment later.
        deadline = time.monotonic() + 30
        rejected = ""
        attempt = 0
        while time.monotonic() < deadline and not rejected:
            attempt += 1
            try:
                kube_cluster.kubectl(
                    "create",
                    "configmap",
                    f"red-{attempt}",
                    "-n",
                    namespace,
                    "--from-literal=color=red",
                )
            except KubectlError as error:
                rejected = str(error)
            else:
                time.sleep(0.5)
        assert DENIAL in rejected
        assert "admission webhook" in rejected
        assert "denied the request" in rejected

        kube_cluster.kubectl(
            "create", "configmap", "blue", "-n", namespace, "--from-literal=color=blue"
        )
        assert "blue" in calls
        assert f"red-{attempt}" in calls
    finally:
        kube_cluster.kubectl("delete", "validatingwebhookconfiguration", config_name, check=False)
