"""The OpenAPI document is valid OpenAPI 3.1 and describes every endpoint of the table."""

from __future__ import annotations

from typing import Any

from openapi_spec_validator import validate

from agent_registry.api import ENDPOINTS, build_document


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        for value in node.values():
            found.extend(_refs(value))
        return found
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


def test_document_is_valid_openapi_3_1() -> None:
    document = build_document(ENDPOINTS)
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises on an invalid document


def test_every_endpoint_and_every_reference_is_in_the_document() -> None:
    document = build_document(ENDPOINTS)
    for endpoint in ENDPOINTS:
        assert endpoint.method.lower() in document["paths"][endpoint.path], endpoint.path
    schemas = document["components"]["schemas"]
    for ref in _refs(document):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref


def test_report_request_schema_comes_from_the_payload_model() -> None:
    document = build_document(ENDPOINTS)
    post = document["paths"]["/v1/agents/{namespace}/{name}/reports"]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"batch_id", "outcomes", "cycles", "loaded", "load_failure"} <= set(schema["properties"])
    assert schema["required"] == ["batch_id"]
    assert set(post["responses"]) >= {"202", "401", "403", "404", "422", "503"}
