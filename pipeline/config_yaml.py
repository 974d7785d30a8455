"""The configuration written back as commented YAML: the repository's ``pipeline.yaml`` and ``config show``.

The pydantic models (:class:`core.config.StoryboardConfig` and the sections it holds) are the one
source of the defaults. :func:`render_defaults` writes them as YAML, each key commented with its field
description (or, where a field has none, its entry in the model's ``Attributes:`` docstring) and the
allowed values of a ``Literal``; the repository's ``pipeline.yaml`` is that text
(``storyboard config defaults > pipeline.yaml``), and a test fails when the two disagree.

:func:`render_effective` writes an effective configuration the same way, each value followed by where
it came from: ``default``, ``file`` (the ``--config`` file named it) or ``env $NAME`` (the environment
variables that ``core.sagemaker_config.resolve_settings`` honours).
"""

from __future__ import annotations

import math
import os
import re
import textwrap
import typing
from collections.abc import Mapping
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from core.config import StoryboardConfig

REGENERATE_COMMAND = "storyboard config defaults > pipeline.yaml"
HEADER = f"""\
# storyboard configuration: the built-in defaults of every key, generated from the configuration models
# (core/config.py and the section models it imports) by `{REGENERATE_COMMAND}`.
# Do not edit the values here: change the model's default (and its Field description, which becomes the
# comment) and regenerate. A project's own configuration names only what it overrides (see examples/);
# `storyboard config show --config FILE` prints the effective values and where each came from.
"""
WIDTH = 118          # longest line before a comment moves above its key
COMMENT_COLUMN = 34  # trailing comments start here when the key and value are shorter


def _scalar(value: Any) -> str:
    """One YAML flow-style scalar, list or mapping on a single line."""
    text = yaml.safe_dump([value], default_flow_style=True, width=math.inf, allow_unicode=True, sort_keys=False)
    return text.strip()[1:-1]


def attribute_docs(model: type[BaseModel]) -> dict[str, str]:
    """Field texts of a Google-style ``Attributes:`` section in ``model``'s docstring.

    An entry ``a / b: text`` documents both ``a`` and ``b``. Returns ``{field: text}`` (whitespace
    collapsed), empty when the docstring has no such section.
    """
    doc = model.__doc__ or ""
    match = re.search(r"^\s*Attributes:\s*$", doc, re.M)
    if not match:
        return {}
    docs: dict[str, str] = {}
    current: list[str] = []
    text: list[str] = []
    indent = None
    for line in doc[match.end():].splitlines():
        if not line.strip():
            continue
        width = len(line) - len(line.lstrip())
        if indent is None:
            indent = width
        if width < indent:
            break
        entry = re.match(r"^\s*([A-Za-z_][\w ,/]*?):\s+(.*)$", line) if width == indent else None
        if entry:
            for name in current:
                docs[name] = " ".join(text)
            current = [n.strip() for n in re.split(r"[/,]", entry.group(1)) if n.strip()]
            text = [entry.group(2).strip()]
        else:
            text.append(line.strip())
    for name in current:
        docs[name] = " ".join(text)
    return docs


def _first_sentence(text: str) -> str:
    text = text.replace("``", "").replace(":func:", "").replace(":class:", "").replace(":mod:", "")
    text = re.sub(r"`([^`]*)`", r"\1", text)
    text = re.sub(r"\s+", " ", text)
    head = re.split(r"(?<=[a-z0-9)])\.\s+(?=[A-Z])", text.strip(), maxsplit=1)[0]
    return head.rstrip(".")


def _literal_choices(annotation: Any) -> list[Any] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(candidate) is Literal:
            return list(typing.get_args(candidate))
    return None


def field_comment(model: type[BaseModel], name: str) -> str:
    """The comment of ``model.name``: its description (or docstring entry), plus the allowed literals."""
    info = model.model_fields[name]
    text = _first_sentence(info.description or attribute_docs(model).get(name, ""))
    choices = _literal_choices(info.annotation)
    if choices and not all(str(c) in text for c in choices):
        listed = " | ".join(str(c) for c in choices)
        text = f"{text} ({listed})" if text else listed
    return text


def _section_model(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    annotation = model.model_fields[name].annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _emit(lines: list[str], indent: int, key: str, value_text: str, comment: str) -> None:
    pad = "  " * indent
    head = f"{pad}{key}:" + (f" {value_text}" if value_text else "")
    if not comment:
        lines.append(head)
        return
    trailing = f"{head.ljust(COMMENT_COLUMN)}  # {comment}" if len(head) < COMMENT_COLUMN else f"{head}  # {comment}"
    if len(trailing) <= WIDTH:
        lines.append(trailing)
        return
    for part in textwrap.wrap(comment, width=WIDTH - len(pad) - 2, break_long_words=False,
                              break_on_hyphens=False):
        lines.append(f"{pad}# {part}")
    lines.append(head)


def _emit_value(lines: list[str], indent: int, key: str, value: Any, comment: str) -> None:
    if isinstance(value, list) and value and any(isinstance(v, Mapping) for v in value):
        _emit(lines, indent, key, "", comment)
        block = yaml.safe_dump(value, default_flow_style=False, sort_keys=False, allow_unicode=True, width=WIDTH)
        lines.extend(f"{'  ' * (indent + 1)}{line}" for line in block.rstrip("\n").splitlines())
        return
    long_items = isinstance(value, list) and value and any(isinstance(v, str) and len(v) > 40 for v in value)
    if long_items:
        _emit(lines, indent, key, "", comment)
        for item in value:
            lines.append(f"{'  ' * (indent + 1)}- {_scalar(item)}")
        return
    _emit(lines, indent, key, _scalar(value), comment)


def _render_model(lines: list[str], model: type[BaseModel], data: Mapping[str, Any], indent: int) -> None:
    previous = ""
    for name in model.model_fields:
        if name not in data:
            continue
        value = data[name]
        comment = field_comment(model, name)
        if comment and comment == previous:  # an "a / b:" docstring entry: said once, above the first key
            comment = ""
        else:
            previous = comment
        section = _section_model(model, name)
        if section is not None and isinstance(value, Mapping):
            if indent == 0:
                lines.append("")
            doc = comment or _first_sentence((section.__doc__ or "").split("\n\n")[0])
            _emit(lines, indent, name, "", doc)
            _render_model(lines, section, value, indent + 1)
            continue
        _emit_value(lines, indent, name, value, comment)


def render_defaults() -> str:
    """The built-in defaults as commented YAML: the text of the repository's ``pipeline.yaml``."""
    data = StoryboardConfig().model_dump(mode="json")
    lines: list[str] = []
    _render_model(lines, StoryboardConfig, data, 0)
    return HEADER + "\n".join(lines).lstrip("\n").join(["\n", "\n"])


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, Mapping):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, dotted))
        flat[dotted] = value
    return flat


def render_effective(config: StoryboardConfig, file_data: Mapping[str, Any] | None,
                     env: Mapping[str, str] | None = None, source_name: str = "file") -> str:
    """``config`` as commented YAML, each value followed by its source.

    Args:
        config: the validated effective configuration.
        file_data: the mapping read from the ``--config`` file (``None``: no file); a key it names,
            or a key under a section it names, is marked ``file``.
        env: environment overrides by dotted key, value the variable's name (for example
            ``{"sagemaker.role_arn": "STORYBOARD_ROLE_ARN"}``); their values are shown in place.
        source_name: the word for values from the file (for example the file's name).

    Returns:
        YAML text that :func:`core.config.parse_config` accepts, with the environment's values in.
    """
    data = config.model_dump(mode="json")
    given = set(_flatten(file_data or {}))
    env = dict(env or {})
    for dotted in env:
        section, _, key = dotted.rpartition(".")
        target = data
        for part in filter(None, section.split(".")):
            target = target[part]
        target[key] = os.environ.get(env[dotted], target.get(key))

    def renderer(model: type[BaseModel], values: Mapping[str, Any], indent: int, prefix: str) -> None:
        for name in model.model_fields:
            if name not in values:
                continue
            dotted = f"{prefix}{name}"
            section = _section_model(model, name)
            if section is not None and isinstance(values[name], Mapping):
                if indent == 0:
                    lines.append("")
                _emit(lines, indent, name, "", "")
                renderer(section, values[name], indent + 1, dotted + ".")
                continue
            if dotted in env:
                source = f"env ${env[dotted]}"
            elif dotted in given:
                source = source_name
            else:
                source = "default"
            _emit_value(lines, indent, name, values[name], source)

    lines: list[str] = []
    renderer(StoryboardConfig, data, 0, "")
    return "\n".join(lines).lstrip("\n") + "\n"
