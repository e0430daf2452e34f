"""The webhook's certificate and message, and the index functions kopf calls."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from agent_registry.controller import indexes
from agent_registry.controller.behaviors import validity_of
from agent_registry.controller.webhook import (
    rejection_message,
    self_signed_certificate,
    validate_behavior,
)


def test_self_signed_certificate_names_the_ip_and_loads(tmp_path: Path) -> None:
    certfile, keyfile = self_signed_certificate(["127.0.0.1"], tmp_path)
    cert = x509.load_pem_x509_certificate(certfile.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)  # a usable pair
    assert keyfile.stat().st_mode & 0o077 == 0


def test_rejection_quotes_error_and_line() -> None:
    message = rejection_message("behavior:3: unexpected symbol near '}'", 3)
    assert message == "spec.lua.script is not a valid behavior: line 3: unexpected symbol near '}'"


def test_validate_behavior_refuses_bad_lua_and_admits_good() -> None:
    import kopf

    warnings: list[str] = []
    with pytest.raises(kopf.AdmissionError, match="line 3: unexpected symbol near 'end'"):
        validate_behavior(
            {"lua": {"script": "function on_task(t, c)\n  return {\nend\n"}}, warnings
        )
    with pytest.raises(kopf.AdmissionError, match="on_task"):
        validate_behavior({"lua": {"script": "function other() end"}}, warnings)
    validate_behavior(
        {
            "lua": {"script": "function on_task(t, c) return {accept = true, effort = 1} end"},
            "limits": {"timeoutMs": 100},
        },
        warnings,
    )
    assert warnings == []


READS_ITS_FIELDS = "function on_task(task, ctx)\n  return {accept = task.priority > 3}\nend\n"


def test_a_script_reading_its_own_task_fields_is_admitted_with_a_warning() -> None:
    warnings: list[str] = []
    validate_behavior({"lua": {"script": READS_ITS_FIELDS}}, warnings)
    (warning,) = warnings
    assert warning.startswith("spec.lua.script: dry call on_task with an invented task")
    assert "line 2: attempt to compare" in warning
    assert "spec.lua.sampleTask" in warning


def test_a_declared_sample_task_decides() -> None:
    import kopf

    warnings: list[str] = []
    validate_behavior(
        {"lua": {"script": READS_ITS_FIELDS, "sampleTask": {"priority": 5}}}, warnings
    )
    assert warnings == []
    with pytest.raises(
        kopf.AdmissionError,
        match="line 2: dry call on_task with the sample task: attempt to compare",
    ):
        validate_behavior(
            {"lua": {"script": READS_ITS_FIELDS, "sampleTask": {"id": "x"}}}, warnings
        )


def test_valid_condition_keeps_true_with_warnings() -> None:
    from agent_registry.lua import ValidationResult

    clean = validity_of(ValidationResult(ok=True))
    assert (clean.status, clean.reason) == ("True", "ScriptValid")
    warned = validity_of(ValidationResult(ok=True, warnings=("dry call ... failed",)))
    assert (warned.status, warned.reason) == ("True", "ValidWithWarnings")
    assert warned.message.startswith("dry call ... failed (set spec.lua.sampleTask")
    refused = validity_of(ValidationResult(ok=False, error="boom", line=3))
    assert (refused.status, refused.reason, refused.message) == (
        "False",
        "InvalidScript",
        "line 3: boom",
    )


def _body(name: str, ref: str | None) -> dict[str, object]:
    spec: dict[str, object] = {"role": "coder"}
    if ref:
        spec["behaviorRef"] = {"name": ref}
    return {
        "metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}", "generation": 2},
        "spec": spec,
        "status": {"phase": "Active"},
    }


def test_index_functions() -> None:
    assert indexes.agents_by_behavior(_body("a1", "careful")) == {("ns", "careful"): "a1"}
    assert indexes.agents_by_behavior(_body("a2", None)) == {}
    ((key, state),) = indexes.agent_states(_body("a1", "careful")).items()
    assert key == ("ns", "a1")
    assert state.behavior_ref == "careful"
    assert state.generation == 2
    assert state.status == {"phase": "Active"}
    assert state.event_body()["metadata"]["uid"] == "uid-a1"
    assert indexes.one({("ns", "a1"): [state]}, ("ns", "a1")) is state
    assert indexes.one({}, ("ns", "a1")) is None
