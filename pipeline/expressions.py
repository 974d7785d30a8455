"""Evaluate the expressions of a compiled SageMaker pipeline definition, as the service does.

Supported (everything the storyboard definition uses, and nothing is skipped silently):

- ``{"Get": "Parameters.<Name>"}``; ``{"Get": "Execution.<Variable>"}`` (``PipelineExecutionId``,
  ``PipelineExecutionArn``, ``PipelineName``, ``PipelineArn``, ``StartDateTime``, ``CurrentDateTime``);
- ``{"Get": "Steps.<Step>.<property path>"}``, for example
  ``Steps.ExtractFrames.ProcessingOutputConfig.Outputs['extract'].S3Output.S3Uri``,
  ``Steps.FineTune.OutputParameters['DryRun']`` or ``Steps.CheckQuality.Outcome``;
- ``{"Std:Join": {"On": sep, "Values": [...]}}``;
- ``{"Std:JsonGet": {"PropertyFile": {"Get": "Steps.<Step>.PropertyFiles.<Name>"}, "Path": "a.b[0].c"}}``
  and the ``S3Uri`` form;
- conditions ``Equals``, ``GreaterThan``, ``GreaterThanOrEqualTo``, ``LessThan``,
  ``LessThanOrEqualTo``, ``In``, ``Not`` and ``Or``.

Anything else raises :class:`UnsupportedExpressionError`, naming it. A reference to something that does
not exist (an unknown parameter, step, output or JSON path) raises :class:`ExpressionError`.

Property paths follow the SDK's ``Properties`` objects: ``Outputs['extract']`` on a list selects the
element whose ``OutputName`` (or another ``...Name`` key) is ``extract``; on a mapping it is a key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

STD_FUNCTIONS = ("Std:Join", "Std:JsonGet")
EXECUTION_VARIABLES = ("PipelineExecutionId", "PipelineExecutionArn", "PipelineName", "PipelineArn",
                       "StartDateTime", "CurrentDateTime")
COMPARISONS = ("Equals", "GreaterThan", "GreaterThanOrEqualTo", "LessThan", "LessThanOrEqualTo")
CONDITION_TYPES = (*COMPARISONS, "In", "Not", "Or")

_TOKEN = re.compile(r"""\.?([A-Za-z_][A-Za-z0-9_:-]*)|\[\s*'([^']*)'\s*\]|\[\s*"([^"]*)"\s*\]|\[\s*(-?\d+)\s*\]""")


class ExpressionError(ValueError):
    """An expression refers to something that does not exist, or its value cannot be used."""


class UnsupportedExpressionError(ExpressionError):
    """The definition uses a function, Get root, condition or step type the local runner does not implement."""


def parse_path(path: str) -> list[str | int]:
    """Split ``a.b['c'][0].d`` into ``["a", "b", "c", 0, "d"]``.

    Raises:
        ExpressionError: the path has characters outside that grammar.
    """
    tokens: list[str | int] = []
    pos = 0
    path = path.strip()
    while pos < len(path):
        match = _TOKEN.match(path, pos)
        if not match or match.end() == pos:
            raise ExpressionError(f"cannot parse property path {path!r} at character {pos}")
        name, single, double, index = match.groups()
        if name is not None:
            tokens.append(name)
        elif single is not None:
            tokens.append(single)
        elif double is not None:
            tokens.append(double)
        else:
            tokens.append(int(index))
        pos = match.end()
    return tokens


def walk(value: Any, tokens: list[str | int], what: str) -> Any:
    """Follow ``tokens`` through nested mappings and lists (see the module docstring for list keys).

    Raises:
        ExpressionError: a key, name or index does not exist; the message names ``what`` and the path.
    """
    current = value
    for i, token in enumerate(tokens):
        here = "".join(f"[{t}]" if isinstance(t, int) else f".{t}" for t in tokens[: i + 1])
        if isinstance(token, int):
            if isinstance(current, list) and -len(current) <= token < len(current):
                current = current[token]
                continue
            raise ExpressionError(f"{what}: index {here} does not exist")
        if isinstance(current, Mapping):
            if token in current:
                current = current[token]
                continue
            raise ExpressionError(f"{what}: {here} does not exist (keys: {sorted(current)})")
        if isinstance(current, list):
            found = [item for item in current if isinstance(item, Mapping)
                     and any(k.endswith("Name") and v == token for k, v in item.items())]
            if len(found) == 1:
                current = found[0]
                continue
            names = sorted({v for item in current if isinstance(item, Mapping)
                            for k, v in item.items() if k.endswith("Name") and isinstance(v, str)})
            raise ExpressionError(f"{what}: {here} matches no element (names: {names})")
        raise ExpressionError(f"{what}: {here} cannot be taken from a {type(current).__name__}")
    return current


def is_expression(value: Any) -> bool:
    """Whether ``value`` is an expression object: a one-key mapping with ``Get`` or a ``Std:`` function."""
    return isinstance(value, Mapping) and len(value) == 1 and (
        "Get" in value or next(iter(value)).startswith("Std:"))


def iter_expressions(value: Any) -> Iterator[Mapping[str, Any]]:
    """Every top-level expression object inside ``value`` (nested ones are reached through these)."""
    if is_expression(value):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from iter_expressions(item)
    elif isinstance(value, list):
        for item in value:
            yield from iter_expressions(item)


def iter_gets(value: Any) -> Iterator[str]:
    """Every ``Get`` path inside ``value``, including those nested in functions."""
    if isinstance(value, Mapping):
        if "Get" in value and len(value) == 1 and isinstance(value["Get"], str):
            yield value["Get"]
            return
        for item in value.values():
            yield from iter_gets(item)
    elif isinstance(value, list):
        for item in value:
            yield from iter_gets(item)


def referenced_steps(value: Any) -> set[str]:
    """Names of the steps whose properties ``value`` reads (``Get: Steps.<Name>...``)."""
    names = set()
    for path in iter_gets(value):
        tokens = parse_path(path)
        if len(tokens) >= 2 and tokens[0] == "Steps":
            names.add(str(tokens[1]))
    return names


def check_supported(value: Any, where: str) -> None:
    """Raise :class:`UnsupportedExpressionError` for any function, Get root or condition not implemented.

    ``where`` names the place (for example ``"step Evaluate, Arguments"``) in the message.
    """
    if isinstance(value, Mapping):
        if len(value) == 1:
            key = next(iter(value))
            if key.startswith("Std:") and key not in STD_FUNCTIONS:
                raise UnsupportedExpressionError(
                    f"{where}: function {key} is not supported by the local runner (supported: {STD_FUNCTIONS})")
            if key == "Get" and isinstance(value[key], str):
                root = str(parse_path(value[key])[0])
                if root not in ("Parameters", "Execution", "Steps"):
                    raise UnsupportedExpressionError(
                        f"{where}: Get {value[key]!r}: root {root!r} is not supported "
                        "(supported: Parameters, Execution, Steps)")
                if root == "Execution" and str(parse_path(value[key])[-1]) not in EXECUTION_VARIABLES:
                    raise UnsupportedExpressionError(
                        f"{where}: execution variable {value[key]!r} is not supported (supported: "
                        f"{EXECUTION_VARIABLES})")
                return
        for item in value.values():
            check_supported(item, where)
    elif isinstance(value, list):
        for item in value:
            check_supported(item, where)


@dataclass
class EvaluationContext:
    """What expressions read.

    Attributes:
        parameters: parameter values by name (already typed).
        execution: execution variables by name (see :data:`EXECUTION_VARIABLES`).
        step_properties: returns the properties mapping of a finished step (raises
            :class:`ExpressionError` for a step that has not run).
        property_file: returns the parsed JSON of ``(step, property file name)``.
        read_json_uri: reads the JSON object at a URI (for ``Std:JsonGet`` with ``S3Uri``).
    """

    parameters: Mapping[str, Any]
    execution: Mapping[str, Any]
    step_properties: Callable[[str], Mapping[str, Any]]
    property_file: Callable[[str, str], Any]
    read_json_uri: Callable[[str], Any] | None = None
    _trace: list[str] = field(default_factory=list)

    def evaluate(self, value: Any) -> Any:
        """Evaluate every expression inside ``value`` (mappings and lists are copied, literals kept)."""
        if isinstance(value, Mapping):
            if len(value) == 1:
                key = next(iter(value))
                if key == "Get" and isinstance(value[key], str):
                    return self.get(value[key])
                if key == "Std:Join":
                    return self._join(value[key])
                if key == "Std:JsonGet":
                    return self._json_get(value[key])
                if key.startswith("Std:"):
                    raise UnsupportedExpressionError(f"function {key} is not supported by the local runner")
            return {k: self.evaluate(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.evaluate(v) for v in value]
        return value

    def get(self, path: str) -> Any:
        """Resolve a ``Get`` path (``Parameters.X``, ``Execution.X``, ``Steps.X...``)."""
        tokens = parse_path(path)
        root = tokens[0]
        if root == "Parameters":
            if len(tokens) != 2 or tokens[1] not in self.parameters:
                raise ExpressionError(f"Get {path!r}: no such parameter (parameters: {sorted(self.parameters)})")
            return self.parameters[str(tokens[1])]
        if root == "Execution":
            if len(tokens) != 2 or tokens[1] not in self.execution:
                raise UnsupportedExpressionError(f"Get {path!r}: execution variable not supported "
                                                 f"(supported: {sorted(self.execution)})")
            return self.execution[str(tokens[1])]
        if root == "Steps":
            if len(tokens) < 3:
                raise ExpressionError(f"Get {path!r}: a step property path needs Steps.<Step>.<Property>")
            step = str(tokens[1])
            properties = self.step_properties(step)
            if tokens[2] == "PropertyFiles":
                raise ExpressionError(f"Get {path!r}: a property file is read with Std:JsonGet, not Get")
            return walk(properties, tokens[2:], f"Get {path!r}")
        raise UnsupportedExpressionError(f"Get {path!r}: root {root!r} is not supported")

    def _join(self, spec: Mapping[str, Any]) -> str:
        if not isinstance(spec, Mapping) or "Values" not in spec:
            raise ExpressionError(f"Std:Join needs On and Values, got {spec!r}")
        values = [to_text(self.evaluate(v)) for v in spec["Values"]]
        return str(spec.get("On", "")).join(values)

    def _json_get(self, spec: Mapping[str, Any]) -> Any:
        if not isinstance(spec, Mapping) or "Path" not in spec:
            raise ExpressionError(f"Std:JsonGet needs Path and PropertyFile or S3Uri, got {spec!r}")
        path = str(spec["Path"])
        if "PropertyFile" in spec:
            ref = spec["PropertyFile"]
            if not (isinstance(ref, Mapping) and isinstance(ref.get("Get"), str)):
                raise ExpressionError(f"Std:JsonGet PropertyFile must be a Get of Steps.<Step>.PropertyFiles.<Name>, "
                                      f"got {ref!r}")
            tokens = parse_path(ref["Get"])
            if len(tokens) != 4 or tokens[0] != "Steps" or tokens[2] != "PropertyFiles":
                raise ExpressionError(f"Std:JsonGet PropertyFile {ref['Get']!r} is not "
                                      "Steps.<Step>.PropertyFiles.<Name>")
            document = self.property_file(str(tokens[1]), str(tokens[3]))
            where = f"Std:JsonGet {path!r} in {tokens[1]}.{tokens[3]}"
        elif "S3Uri" in spec:
            if self.read_json_uri is None:
                raise UnsupportedExpressionError("Std:JsonGet with S3Uri is not supported here")
            uri = to_text(self.evaluate(spec["S3Uri"]))
            document = self.read_json_uri(uri)
            where = f"Std:JsonGet {path!r} in {uri}"
        else:
            raise ExpressionError(f"Std:JsonGet needs PropertyFile or S3Uri, got keys {sorted(spec)}")
        value = walk(document, parse_path(path), where)
        if isinstance(value, (Mapping, list)):
            raise ExpressionError(f"{where}: the value is a {type(value).__name__}, not a number, string or boolean")
        return value

    def condition(self, cond: Mapping[str, Any]) -> bool:
        """Evaluate one condition of a Condition step's ``Conditions`` list.

        Raises:
            UnsupportedExpressionError: an unknown condition ``Type``.
            ExpressionError: an operand is missing (``null``) or cannot be compared.
        """
        kind = cond.get("Type")
        if kind in COMPARISONS:
            left = self.evaluate(cond.get("LeftValue"))
            right = self.evaluate(cond.get("RightValue"))
            return compare(kind, left, right)
        if kind == "In":
            query = self.evaluate(cond.get("QueryValue"))
            values = [self.evaluate(v) for v in cond.get("Values", [])]
            return any(compare("Equals", query, v) for v in values)
        if kind == "Not":
            return not self.condition(cond["Condition"])
        if kind == "Or":
            return any(self.condition(c) for c in cond.get("Conditions", []))
        raise UnsupportedExpressionError(f"condition type {kind!r} is not supported (supported: {CONDITION_TYPES})")


def to_text(value: Any) -> str:
    """A value as text, the way a Join or a container argument shows it (booleans lower-case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        raise ExpressionError("a null value cannot be joined into a string")
    if isinstance(value, (Mapping, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def compare(kind: str, left: Any, right: Any) -> bool:
    """Compare two operands: numerically when both read as numbers, else as text (``Equals`` only).

    Raises:
        ExpressionError: an operand is ``null``, or an ordering comparison of non-numbers.
    """
    if left is None or right is None:
        raise ExpressionError(f"{kind}: cannot compare {left!r} with {right!r} (a value is null)")
    ln, rn = _number(left), _number(right)
    if kind == "Equals":
        if isinstance(left, bool) or isinstance(right, bool):
            return to_text(left).lower() == to_text(right).lower()
        if ln is not None and rn is not None and not (isinstance(left, str) and isinstance(right, str)):
            return ln == rn
        return to_text(left) == to_text(right)
    if ln is None or rn is None:
        raise ExpressionError(f"{kind}: {left!r} and {right!r} are not both numbers")
    return {"GreaterThan": ln > rn, "GreaterThanOrEqualTo": ln >= rn,
            "LessThan": ln < rn, "LessThanOrEqualTo": ln <= rn}[kind]
