"""The validating admission webhook: refuse an AgentBehavior whose Lua does not validate, and
a BehaviorExperiment whose arms cannot run (another role, a missing behavior, mixed weights).

kopf serves it and manages the ValidatingWebhookConfiguration (URL + caBundle). kopf's own
self-signed certificates need `certbuilder`; we make one with `cryptography` (already a
dependency) and hand kopf the files.
"""

from __future__ import annotations

import datetime
import ipaddress
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kopf
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent_registry.controller.behaviors import SAMPLE_TASK_HINT, validate_spec
from agent_registry.controller.context import IndexMap
from agent_registry.controller.experiments import declared_behaviors, parse_spec, spec_problems
from agent_registry.controller.status import describe_lua_error

WEBHOOK_CONFIGURATION = "agent-registry.agents.singularity.dev"


def self_signed_certificate(hosts: list[str], directory: Path) -> tuple[Path, Path]:
    """A self-signed serving certificate for `hosts` (IPs or DNS names); (certfile, keyfile)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    certfile = directory / "tls.crt"
    keyfile = directory / "tls.key"
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    keyfile.chmod(0o600)
    return certfile, keyfile


def webhook_server(
    listen: str,
    *,
    host: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> kopf.WebhookServer:
    """kopf's webhook server on `listen` (ADDR:PORT). Without a certificate, a self-signed one
    for the advertised host (the apiserver reaches 127.0.0.1 in the local control plane)."""
    addr, _, port = listen.rpartition(":")
    advertised = host or (addr if addr not in ("", "0.0.0.0", "::") else "127.0.0.1")
    if certfile is None or keyfile is None:
        directory = Path(tempfile.mkdtemp(prefix="agentreg-webhook-"))
        cert_path, key_path = self_signed_certificate([advertised], directory)
        certfile, keyfile = str(cert_path), str(key_path)
    return kopf.WebhookServer(
        addr=addr or "0.0.0.0",
        port=int(port),
        host=advertised,
        certfile=certfile,
        pkeyfile=keyfile,
    )


def rejection_message(error: str | None, line: int | None) -> str:
    return f"spec.lua.script is not a valid behavior: {describe_lua_error(error, line)}"


def validate_behavior(spec: Mapping[str, Any], warnings: list[str], **_: Any) -> None:
    """Admission: refuse a script that would be marked Valid=False. What would make it
    Valid=True with warnings is admitted with them as admission warnings (kubectl prints
    them)."""
    result = validate_spec(spec)
    if not result.ok:
        raise kopf.AdmissionError(rejection_message(result.error, result.line), code=422)
    warnings.extend(f"spec.lua.script: {w} ({SAMPLE_TASK_HINT})" for w in result.warnings)


def validate_experiment(
    spec: Mapping[str, Any],
    namespace: str | None,
    behavior_states: IndexMap,
    operation: str | None = None,
    old: Mapping[str, Any] | None = None,
    **_: Any,
) -> None:
    """Admission: refuse what the controller would mark Ready=False/InvalidSpec, naming the
    field. The behaviors come from the operator's index: one applied a moment ago may not be
    in it yet, and a retried apply then goes through."""
    # Only a new spec is judged. The verdict depends on other objects, so an unchanged spec
    # whose behavior was deleted since must still take metadata patches: the finalizer's
    # removal on delete, the consumed abort annotation.
    if operation == "UPDATE" and old is not None and dict(old.get("spec") or {}) == dict(spec):
        return
    parsed, problems = parse_spec(spec)
    if parsed is not None:
        names = [arm.behavior_ref.name for arm in parsed.arms]
        behaviors = declared_behaviors(behavior_states, str(namespace), names)
        problems = spec_problems(parsed, behaviors, need_revisions=False)
    if problems:
        raise kopf.AdmissionError("; ".join(problems), code=422)
