"""Validates the local API's answers against the schemas of OpenAI's published OpenAPI spec.

The schemas are an excerpt kept as data in ``data/openai_openapi_excerpt.json`` (its ``$comment``
says which spec version it comes from and how it was cut down).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

EXCERPT = Path(__file__).parent / "data" / "openai_openapi_excerpt.json"


@functools.cache
def _definitions() -> dict[str, Any]:
    return json.loads(EXCERPT.read_text())["$defs"]


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    if name not in _definitions():
        raise KeyError(f"{name} is not in the OpenAPI excerpt")
    return Draft202012Validator({"$defs": _definitions(), "$ref": f"#/$defs/{name}"})


def schema_errors(name: str, instance: Any) -> list[str]:
    """Every way ``instance`` breaks OpenAI's schema ``name`` (empty when it conforms)."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in _validator(name).iter_errors(instance)]


def assert_conforms(name: str, instance: Any) -> None:
    errors = schema_errors(name, instance)
    assert not errors, f"not a valid OpenAI {name}:\n" + "\n".join(errors[:10])
