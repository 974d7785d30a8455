"""Read ``template.yaml`` (CloudFormation YAML with its short-form tags) and turn it into the request body.

The YAML, with comments, is over CloudFormation's 51,200-byte limit of an inline ``TemplateBody``
(CloudFormation quotas: "Template body size in a request"); the same template as compact JSON is far under it,
so :func:`template_body` sends JSON and no S3 upload is needed before the bucket exists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from core.errors import InputError

TEMPLATE_PATH = Path(__file__).with_name("template.yaml")
TEMPLATE_BODY_MAX_BYTES = 51_200  # CloudFormation quotas: template body size in a request


class _CfnLoader(yaml.SafeLoader):
    """A SafeLoader that reads ``!Ref``, ``!GetAtt``, ``!Sub`` and the other ``Fn::`` short forms."""


def _short_form(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{tag_suffix}": value}


_CfnLoader.add_multi_constructor("!", _short_form)


def load_template(path: str | Path = TEMPLATE_PATH) -> dict[str, Any]:
    """The template as a mapping, short forms expanded (``!Ref X`` -> ``{"Ref": "X"}``).

    Raises:
        InputError: the file is missing or is not a CloudFormation template (no ``Resources`` mapping).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"CloudFormation template {path} does not exist")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as err:
        raise InputError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("Resources"), dict):
        raise InputError(f"{path} is not a CloudFormation template (no Resources mapping)")
    return data


def template_body(template: dict[str, Any]) -> str:
    """Compact JSON of ``template`` for ``CreateChangeSet(TemplateBody=...)``.

    Raises:
        InputError: the JSON is over 51,200 bytes (upload it to S3 and pass a TemplateURL instead).
    """
    body = json.dumps(_without_linter_metadata(template), separators=(",", ":"), sort_keys=False)
    size = len(body.encode("utf-8"))
    if size > TEMPLATE_BODY_MAX_BYTES:
        raise InputError(f"the template is {size} bytes as JSON; CloudFormation takes at most "
                         f"{TEMPLATE_BODY_MAX_BYTES} inline (split it or deploy it from S3 with a TemplateURL)")
    return body


def _without_linter_metadata(template: dict[str, Any]) -> dict[str, Any]:
    """A copy without the ``checkov`` and ``cfn-lint`` entries of resource ``Metadata`` (read by the linters only)."""
    resources = {}
    for name, resource in template["Resources"].items():
        metadata = {k: v for k, v in (resource.get("Metadata") or {}).items() if k not in ("checkov", "cfn-lint")}
        resources[name] = {k: v for k, v in resource.items() if k != "Metadata"} | ({"Metadata": metadata}
                                                                                   if metadata else {})
    return {**template, "Resources": resources}


def template_parameters(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The template's ``Parameters`` section (name -> declaration)."""
    return dict(template.get("Parameters") or {})
