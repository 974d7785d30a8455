"""The JSON Schema of ``evaluation.json``: load it, and validate a document against it.

The schema is ``evaluation/schemas/evaluation.schema.json``; documents carry ``schema_version``
:data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

SCHEMA_VERSION = "1.0"
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "evaluation.schema.json"


def load_schema() -> dict[str, Any]:
    """The JSON Schema of ``evaluation.json`` (``evaluation/schemas/evaluation.schema.json``)."""
    import json

    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate_evaluation(document: Mapping[str, Any]) -> None:
    """Validate an ``evaluation.json`` document against its JSON Schema (Draft 2020-12).

    Raises:
        ValueError: the document breaks the schema; the message gives the JSON path and the problem.
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  - {'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors[:10]]
        raise ValueError("evaluation.json does not match its schema:\n" + "\n".join(lines))
