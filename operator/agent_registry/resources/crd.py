"""CustomResourceDefinitions generated from the pydantic models (the one source of truth).

Pydantic's JSON Schema is close to a Kubernetes structural schema but not equal: refs must be
inlined, `X | None` becomes an optional X (absent, never null), titles and defaults go, and
`additionalProperties` may not sit beside `properties`. `structural()` does that conversion.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from agent_registry.resources import agent, behavior, experiment, policy
from agent_registry.resources.common import CATEGORY, GROUP, VERSION

JsonSchema = dict[str, Any]

# Keys of pydantic's JSON Schema that a CRD schema does not want.
_DROPPED_KEYS = {"title", "default", "additionalProperties"}


def structural(schema: JsonSchema) -> JsonSchema:
    """Convert a pydantic JSON Schema (with $defs) into an inlined structural schema."""
    definitions: dict[str, JsonSchema] = schema.get("$defs", {})

    def convert(node: JsonSchema) -> JsonSchema:
        if "$ref" in node:
            target = definitions[node["$ref"].rsplit("/", 1)[-1]]
            merged = {**convert(target), **{k: v for k, v in node.items() if k != "$ref"}}
            return {k: v for k, v in merged.items() if k not in _DROPPED_KEYS}
        if "anyOf" in node:
            # `X | None`: optional in Kubernetes means absent, so keep only X.
            options = [option for option in node["anyOf"] if option.get("type") != "null"]
            if len(options) != 1:
                raise ValueError(f"unions are not structural: {node}")
            outer = {k: v for k, v in node.items() if k != "anyOf" and k not in _DROPPED_KEYS}
            return {**convert(options[0]), **outer}
        result: JsonSchema = {}
        for key, value in node.items():
            if key in _DROPPED_KEYS or key == "$defs":
                continue
            if key == "properties":
                result[key] = {name: convert(sub) for name, sub in value.items()}
            elif key == "items":
                result[key] = convert(value)
            else:
                # A copy: a $def used twice would otherwise share its lists, which YAML then
                # writes as anchors and aliases.
                result[key] = copy.deepcopy(value)
        if result.get("x-kubernetes-preserve-unknown-fields"):
            result.pop("properties", None)
        # JSON Schema 2020-12 (pydantic's `gt`, `lt`) makes the exclusive bounds numbers; the
        # OpenAPI v3.0 schema of a CRD has them as booleans beside minimum/maximum, and the
        # apiserver refuses a number there.
        for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            value = result.get(exclusive)
            if isinstance(value, int | float) and not isinstance(value, bool):
                result[bound] = value
                result[exclusive] = True
        return result

    return convert(schema)


def model_schema(model: type[BaseModel]) -> JsonSchema:
    """The structural schema of one model, camelCase as on the wire."""
    return structural(model.model_json_schema(by_alias=True, mode="validation"))


def _column(
    name: str, json_path: str, type_: str, description: str, priority: int = 0
) -> JsonSchema:
    column: JsonSchema = {
        "name": name,
        "type": type_,
        "jsonPath": json_path,
        "description": description,
    }
    if priority:
        column["priority"] = priority
    return column


def _condition_path(condition_type: str) -> str:
    return f'.status.conditions[?(@.type=="{condition_type}")].status'


AGE = _column("Age", ".metadata.creationTimestamp", "date", "Time since creation.")

AGENT_COLUMNS = [
    _column("Role", ".spec.role", "string", "Role of the agent."),
    _column("Behavior", ".status.behavior.name", "string", "Assigned AgentBehavior."),
    _column("Source", ".status.behavior.source", "string", "What decided it (Pin, Policy, ...)."),
    _column("Phase", ".status.phase", "string", "Active, Paused or Stopped."),
    _column("Tasks", ".status.stats.tasksCompleted", "integer", "Tasks completed."),
    _column("Success", ".status.stats.successRate", "number", "Success rate (0..1)."),
    _column("Loaded", _condition_path("BehaviorLoaded"), "string", "Runtime loaded the script."),
    AGE,
    _column("Revision", ".status.behavior.revision", "integer", "Assigned revision.", 1),
    _column("Ready", _condition_path("Ready"), "string", "Ready condition.", 1),
]

BEHAVIOR_COLUMNS = [
    _column("Role", ".spec.roleType", "string", "Role the behavior is for."),
    _column("Revision", ".status.revision", "integer", "Revision of the last valid script."),
    _column("Valid", _condition_path("Valid"), "string", "The script validated."),
    _column("Agents", ".status.agentCount", "integer", "Agents assigned this behavior."),
    _column("Success", ".status.stats.successRate", "number", "Success rate of its agents."),
    _column("Rollout", ".status.rollout.phase", "string", "Canary rollout of the newest revision."),
    AGE,
    _column("Parent", ".spec.parentRef.name", "string", "Behavior it derives from.", 1),
    _column("Stable", ".status.rollout.stableRevision", "integer", "Revision agents run.", 1),
    _column("Canary", ".status.rollout.canaryRevision", "integer", "Revision under test.", 1),
    _column("Weight", ".status.rollout.weight", "integer", "Canary percent.", 1),
]

POLICY_COLUMNS = [
    _column("Role", ".spec.role", "string", "Role whose agents are judged."),
    _column("Mode", ".spec.mode", "string", "Auto switches, Recommend only proposes."),
    _column("Agents", ".status.agents", "integer", "Agents judged."),
    _column("Switches", ".status.switches", "integer", "Switches made."),
    _column("Last-Switch", ".status.lastSwitchAt", "date", "Time since the last switch."),
    AGE,
]

EXPERIMENT_COLUMNS = [
    _column("Role", ".spec.role", "string", "Role whose agents take part."),
    _column("Arms", ".status.armNames", "string", "The arms' AgentBehaviors."),
    _column("Phase", ".status.phase", "string", "Pending, Running, Concluded, ..."),
    _column("Winner", ".status.winner", "string", "The winning arm's AgentBehavior."),
    _column("P-Value", ".status.pValue", "number", "Always-valid p-value of the leader."),
    _column("Tasks", ".status.tasks", "integer", "Tasks counted, all arms."),
    AGE,
    _column("Unit", ".spec.unit", "string", "Task or Agent.", 1),
    _column("SRM", _condition_path("SampleRatioMismatch"), "string", "Sample ratio mismatch.", 1),
]

# Cross-field rules that are cheap in CEL (at most 5 arms); the rest needs the behaviors
# themselves (their role, whether they exist): the webhook, or the controller without it.
EXPERIMENT_RULES: list[JsonSchema] = [
    {
        "rule": (
            "self.spec.arms.all(a, self.spec.arms.exists_one(b,"
            " b.behaviorRef.name == a.behaviorRef.name))"
        ),
        "message": "every arm names a different AgentBehavior",
        "fieldPath": ".spec.arms",
    },
    {
        "rule": ("self.spec.arms.all(a, has(a.weight)) || self.spec.arms.all(a, !has(a.weight))"),
        "message": "give a weight to every arm or to none (none: equal weights)",
        "fieldPath": ".spec.arms",
    },
    {
        "rule": (
            "(has(self.spec.maxTasksPerArm) ? self.spec.maxTasksPerArm : 10000)"
            " >= (has(self.spec.minTasksPerArm) ? self.spec.minTasksPerArm : 100)"
        ),
        "message": "maxTasksPerArm must be at least minTasksPerArm (defaults 10000 and 100)",
        "fieldPath": ".spec.maxTasksPerArm",
    },
]


def _root_schema(
    spec: type[BaseModel], status: type[BaseModel], rules: list[JsonSchema]
) -> JsonSchema:
    schema: JsonSchema = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": model_schema(spec),
            "status": model_schema(status),
        },
    }
    if rules:
        schema["x-kubernetes-validations"] = rules
    return schema


def _crd(
    *,
    kind: str,
    plural: str,
    singular: str,
    short_names: list[str],
    description: str,
    schema: JsonSchema,
    columns: list[JsonSchema],
) -> JsonSchema:
    schema = {"description": description, **schema}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "agent-registry"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": short_names,
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def agent_crd() -> JsonSchema:
    return _crd(
        kind=agent.KIND,
        plural=agent.PLURAL,
        singular=agent.SINGULAR,
        short_names=agent.SHORT_NAMES,
        description=(
            "An AI agent registered in the agent registry: the behavior it runs "
            "(spec.behaviorRef), optionally how to run it (spec.template), and how it performs "
            "(status, written by the operator)."
        ),
        schema=_root_schema(agent.AgentSpec, agent.AgentStatus, []),
        columns=AGENT_COLUMNS,
    )


def behavior_crd() -> JsonSchema:
    return _crd(
        kind=behavior.KIND,
        plural=behavior.PLURAL,
        singular=behavior.SINGULAR,
        short_names=behavior.SHORT_NAMES,
        description=(
            "A sandboxed Lua behavior for agents of one role. Editing spec.lua.script makes a "
            "new revision and hot-reloads every agent using it, without restarting pods."
        ),
        schema=_root_schema(
            behavior.AgentBehaviorSpec,
            behavior.AgentBehaviorStatus,
            [
                {
                    "rule": (
                        "!has(self.spec.parentRef)"
                        " || self.spec.parentRef.name != self.metadata.name"
                    ),
                    "message": "an AgentBehavior cannot be its own parent",
                    "fieldPath": ".spec.parentRef.name",
                }
            ],
        ),
        columns=BEHAVIOR_COLUMNS,
    )


def policy_crd() -> JsonSchema:
    return _crd(
        kind=policy.KIND,
        plural=policy.PLURAL,
        singular=policy.SINGULAR,
        short_names=policy.SHORT_NAMES,
        description=(
            "Switches underperforming Agents of a role to an AgentBehavior that is credibly "
            "better for them (mode Auto), or only recommends it (mode Recommend). Decisions "
            "live in status and the registry; Agents' specs are never edited."
        ),
        schema=_root_schema(policy.BehaviorPolicySpec, policy.BehaviorPolicyStatus, []),
        columns=POLICY_COLUMNS,
    )


def experiment_crd() -> JsonSchema:
    return _crd(
        kind=experiment.KIND,
        plural=experiment.PLURAL,
        singular=experiment.SINGULAR,
        short_names=experiment.SHORT_NAMES,
        description=(
            "An A/B experiment between AgentBehaviors of one role on the role's Agents: each "
            "arm's revision is frozen at the start, outcomes are counted per arm from then on, "
            "and an always-valid test declares a winner (or Inconclusive at the horizon). "
            "Agents' specs are never edited; the experiment's grant wins over a policy and "
            "their spec, a pin wins over it."
        ),
        schema=_root_schema(
            experiment.BehaviorExperimentSpec,
            experiment.BehaviorExperimentStatus,
            EXPERIMENT_RULES,
        ),
        columns=EXPERIMENT_COLUMNS,
    )


def all_crds() -> dict[str, JsonSchema]:
    """File name -> CRD, as `agentreg crds` writes them."""
    crds = [agent_crd(), behavior_crd(), policy_crd(), experiment_crd()]
    return {f"{crd['spec']['group']}_{crd['spec']['names']['plural']}.yaml": crd for crd in crds}


def render_yaml(crd: JsonSchema) -> str:
    header = "# Generated by `agentreg crds` from agent_registry.resources; do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=100)


def write_crds(output: Path) -> list[Path]:
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, crd in all_crds().items():
        path = output / file_name
        path.write_text(render_yaml(crd))
        written.append(path)
    return written
