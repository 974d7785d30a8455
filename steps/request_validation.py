"""Validation of AWS requests against botocore's service models, before anything is paid for.

:func:`request_problems` runs botocore's own ``ParamValidator`` (required members, types, minimum lengths
and values: what botocore checks before sending) and then the constraints the service model declares but
botocore does not check client-side: maximum lengths and values, enums and ``pattern`` regular expressions
(AWS writes them in Java syntax; those using ``\\p{..}`` classes are checked with the ``regex`` package when
it is installed and skipped otherwise). It works for any operation of any service botocore knows, with no
network access.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

import botocore.session
from botocore.model import OperationModel, Shape
from botocore.validate import ParamValidator

from core.errors import InputError

log = logging.getLogger(__name__)

_SESSION: botocore.session.Session | None = None


def _operation_model(service: str, operation: str) -> OperationModel:
    global _SESSION
    if _SESSION is None:
        _SESSION = botocore.session.get_session()
    try:
        model = _SESSION.get_service_model(service)
    except Exception as err:  # botocore raises UnknownServiceError
        raise InputError(f"unknown AWS service {service!r} in botocore {botocore.__version__}: {err}") from None
    try:
        return model.operation_model(operation)
    except Exception:
        raise InputError(f"{service} has no operation {operation!r} (botocore {botocore.__version__}); "
                         f"use the API name, for example 'CreateModelCustomizationJob'") from None


# -- request validation ---------------------------------------------------------------------------------


def request_problems(service: str, operation: str, params: Mapping[str, Any]) -> list[str]:
    """Every way ``params`` breaks the service model of ``service.operation``; empty when it is valid.

    Args:
        service: botocore service name, for example ``"bedrock"`` or ``"sagemaker"``.
        operation: API operation name, for example ``"CreateModelCustomizationJob"``.
        params: the request, as passed to the boto3 client method.

    Returns:
        One message per problem, naming the parameter path (``hyperParameters.stepCount``).

    Raises:
        InputError: the service or operation is unknown to the installed botocore.
    """
    op = _operation_model(service, operation)
    problems: list[str] = []
    report = ParamValidator().validate(dict(params), op.input_shape)
    if report.has_errors():
        problems.extend(line.strip() for line in report.generate_report().splitlines() if line.strip())
    _walk(params, op.input_shape, "", problems)
    return problems


def validate_request(service: str, operation: str, params: Mapping[str, Any], what: str = "request") -> None:
    """Raise :class:`InputError` listing every problem of ``params`` (see :func:`request_problems`)."""
    problems = request_problems(service, operation, params)
    if problems:
        listed = "\n  - ".join(problems)
        raise InputError(f"{what} is not a valid {service} {operation} request "
                         f"(botocore {botocore.__version__} service model):\n  - {listed}")


def _walk(value: Any, shape: Shape, path: str, problems: list[str]) -> None:
    """Check the constraints ParamValidator skips: max length/value, enum and pattern."""
    name = path or "request"
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure" and isinstance(value, Mapping):
        for key, member in shape.members.items():
            if key in value and value[key] is not None:
                _walk(value[key], member, f"{path}.{key}" if path else key, problems)
    elif kind == "list" and isinstance(value, (list, tuple)):
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{name}: {len(value)} items, at most {meta['max']} allowed")
        for i, item in enumerate(value):
            _walk(item, shape.member, f"{name}[{i}]", problems)
    elif kind == "map" and isinstance(value, Mapping):
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{name}: {len(value)} entries, at most {meta['max']} allowed")
        for key, item in value.items():
            _walk(key, shape.key, f"{name} key {key!r}", problems)
            _walk(item, shape.value, f"{name}.{key}", problems)
    elif kind == "string" and isinstance(value, str):
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{name}: {len(value)} characters, at most {meta['max']} allowed")
        enum = getattr(shape, "enum", None)
        if enum and value not in enum:
            problems.append(f"{name}: {value!r} is not one of {list(enum)}")
        pattern = meta.get("pattern")
        if pattern and not _pattern_matches(pattern, value):
            problems.append(f"{name}: {value!r} does not match the pattern {pattern}")
    elif kind in ("integer", "long", "float", "double") and isinstance(value, (int, float)):
        if "max" in meta and value > meta["max"]:
            problems.append(f"{name}: {value} is above the maximum {meta['max']}")


_PATTERN_CACHE: dict[str, Callable[[str], bool] | None] = {}


def _pattern_matches(pattern: str, value: str) -> bool:
    """Whether ``value`` matches the whole AWS (Java-syntax) ``pattern``; unknown syntax counts as a match."""
    if pattern not in _PATTERN_CACHE:
        _PATTERN_CACHE[pattern] = _compile(pattern)
    matcher = _PATTERN_CACHE[pattern]
    return True if matcher is None else matcher(value)


def _compile(pattern: str) -> Callable[[str], bool] | None:
    body = pattern[1:] if pattern.startswith("^") else pattern
    body = body[:-1] if body.endswith("$") and not body.endswith("\\$") else body
    if "\\p{" in body:
        try:
            import regex  # optional: Unicode property classes such as \p{L}
        except ImportError:
            return None
        try:
            compiled = regex.compile(body, regex.DOTALL)
        except regex.error:
            return None
        return lambda v: compiled.fullmatch(v) is not None
    try:
        compiled_re = re.compile(body, re.DOTALL)
    except re.error:
        log.debug("pattern %r is not Python regex syntax; not checked", pattern)
        return None
    return lambda v: compiled_re.fullmatch(v) is not None
