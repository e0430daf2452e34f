"""The CRDs in crds/ are generated from the pydantic models; this keeps them in sync."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from agent_registry.resources import AgentBehaviorSpec, AgentSpec
from agent_registry.resources.crd import all_crds, render_yaml

CRDS_DIR = Path(__file__).resolve().parents[2] / "crds"


@pytest.mark.parametrize("file_name", sorted(all_crds()))
def test_crds_directory_matches_the_models(file_name: str) -> None:
    path = CRDS_DIR / file_name
    assert path.exists(), f"{path} missing: run `agentreg crds --output crds/`"
    assert path.read_text() == render_yaml(all_crds()[file_name]), (
        f"{path} drifted from the models: run `agentreg crds --output crds/`"
    )


def test_no_stray_crd_files() -> None:
    assert sorted(p.name for p in CRDS_DIR.glob("*.yaml")) == sorted(all_crds())


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.get("properties", {}).items():
            found += _walk(value, f"{path}.{key}")
        if "items" in node:
            found += _walk(node["items"], f"{path}[]")
    return found


@pytest.mark.parametrize("file_name", sorted(all_crds()))
def test_schema_is_structural(file_name: str) -> None:
    crd = yaml.safe_load(render_yaml(all_crds()[file_name]))
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert not {"$ref", "anyOf", "title"} & set(node), path
        assert "type" in node, f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path


def test_printer_columns_are_the_documented_ones() -> None:
    crds = {c["spec"]["names"]["kind"]: c for c in all_crds().values()}

    def columns(kind: str) -> list[str]:
        version = crds[kind]["spec"]["versions"][0]
        return [
            c["name"].upper() for c in version["additionalPrinterColumns"] if not c.get("priority")
        ]

    assert columns("Agent") == [
        "ROLE",
        "BEHAVIOR",
        "SOURCE",
        "PHASE",
        "TASKS",
        "SUCCESS",
        "LOADED",
        "AGE",
    ]
    assert columns("BehaviorPolicy") == [
        "ROLE",
        "MODE",
        "AGENTS",
        "SWITCHES",
        "LAST-SWITCH",
        "AGE",
    ]
    assert crds["BehaviorPolicy"]["spec"]["names"]["shortNames"] == ["bp"]
    assert columns("BehaviorExperiment") == [
        "ROLE",
        "ARMS",
        "PHASE",
        "WINNER",
        "P-VALUE",
        "TASKS",
        "AGE",
    ]
    assert crds["BehaviorExperiment"]["spec"]["names"]["shortNames"] == ["bx"]
    assert columns("AgentBehavior") == [
        "ROLE",
        "REVISION",
        "VALID",
        "AGENTS",
        "SUCCESS",
        "ROLLOUT",
        "AGE",
    ]
    assert crds["Agent"]["spec"]["names"]["shortNames"] == ["ag"]
    assert crds["AgentBehavior"]["spec"]["names"]["shortNames"] == ["agb"]
    for crd in crds.values():
        assert crd["spec"]["names"]["categories"] == ["singularity"]
        assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}


@pytest.mark.parametrize("file_name", sorted(all_crds()))
def test_exclusive_bounds_are_booleans(file_name: str) -> None:
    """OpenAPI v3.0, as CRDs want it: pydantic's numeric `exclusiveMinimum: 0` is refused by
    the apiserver, `minimum: 0` with `exclusiveMinimum: true` is the same bound."""
    crd = yaml.safe_load(render_yaml(all_crds()[file_name]))
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if exclusive in node:
                assert node[exclusive] is True, path
                assert bound in node, path


def test_experiment_weights_are_exclusive_of_zero() -> None:
    crd = all_crds()["agents.singularity.dev_behaviorexperiments.yaml"]
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    weight = spec["properties"]["arms"]["items"]["properties"]["weight"]
    assert (weight["minimum"], weight["exclusiveMinimum"]) == (0, True)
    assert (spec["properties"]["arms"]["minItems"], spec["properties"]["arms"]["maxItems"]) == (
        2,
        5,
    )


def test_template_keeps_unknown_fields() -> None:
    crd = all_crds()["agents.singularity.dev_agents.yaml"]
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["template"] == {
        "type": "object",
        "description": spec["properties"]["template"]["description"],
        "x-kubernetes-preserve-unknown-fields": True,
    }


def test_models_validate_like_the_schema() -> None:
    spec = AgentBehaviorSpec.model_validate(
        {"roleType": "coder", "lua": {"script": "function on_task(t, c) end"}}
    )
    assert spec.to_wire() == {"roleType": "coder", "lua": {"script": "function on_task(t, c) end"}}
    with pytest.raises(ValidationError):
        AgentBehaviorSpec.model_validate({"roleType": "coder"})
    with pytest.raises(ValidationError):
        AgentBehaviorSpec.model_validate(
            {"roleType": "coder", "lua": {"script": "x"}, "limits": {"timeoutMs": 0}}
        )
    with pytest.raises(ValidationError):
        AgentSpec.model_validate({"role": "Not A Role"})
    agent = AgentSpec.model_validate({"role": "coder", "template": {"spec": {"containers": []}}})
    assert agent.template == {"spec": {"containers": []}}
