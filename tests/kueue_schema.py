"""Kueue 0.19's CRD schemas (tests/fixtures/kueue, verbatim release files) as JSON Schema, for
the tests and for the loopback API server, which refuses what kube-apiserver would."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from models.planning.kueue import KUEUE_API_VERSION, KUEUE_VERSION, PLURALS

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def strict(schema: Any) -> Any:
    """Unknown fields are errors, as kube-apiserver's fieldValidation=Strict makes them (and
    as a typo such as v1beta1's `cohort` in a v1beta2 object should be)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def crd_to_jsonschema(node: Any) -> Any:
    """A CRD structural schema as JSON Schema: `x-kubernetes-int-or-string` becomes integer or
    string (the quantity `pattern` then applies to strings only, as in the API server)."""
    if isinstance(node, list):
        return [crd_to_jsonschema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: crd_to_jsonschema(v) for k, v in node.items()
           if not k.startswith("x-kubernetes-") and k not in ("default", "format")}
    if node.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


def crd(kind: str) -> dict[str, Any]:
    path = FIXTURES / "kueue" / f"kueue.x-k8s.io_{PLURALS[kind]}.yaml"
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


@functools.cache
def kueue_schema(kind: str) -> dict[str, Any]:
    """The strict v1beta2 schema of `kind`, with the object metadata kube-apiserver checks."""
    (version,) = [v for v in crd(kind)["spec"]["versions"] if v["name"] == KUEUE_VERSION]
    schema: dict[str, Any] = strict(crd_to_jsonschema(version["schema"]["openAPIV3Schema"]))
    schema["properties"]["apiVersion"]["const"] = KUEUE_API_VERSION
    schema["properties"]["kind"]["const"] = kind
    metadata: dict[str, Any] = {"name": {"type": "string", "maxLength": 253},
                                "labels": {"type": "object",
                                           "additionalProperties": {"type": "string"}}}
    if crd(kind)["spec"]["scope"] == "Namespaced":
        metadata["namespace"] = {"type": "string", "maxLength": 63}
    schema["properties"]["metadata"] = {"type": "object", "required": ["name"],
                                        "properties": metadata, "additionalProperties": False}
    return schema


def errors(schema: dict[str, Any], obj: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(obj)]


def kueue_errors(manifest: dict[str, Any]) -> list[str]:
    return errors(kueue_schema(manifest["kind"]), manifest)
