"""The values of the pipeline parameters (:mod:`pipeline.parameters` defines them): every parameter's default,
the checking and conversion of ``--param`` overrides and ``sagemaker.parameters`` (type, allowed values, range,
unknown names with the closest ones), the SDK parameter objects of the definition and the plain-text table that
``storyboard start --help`` shows.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from core.errors import InputError
from pipeline.parameters import PARAMETER_SPECS, SPECS_BY_NAME, ParameterSpec, ParameterValue, specs_for

if TYPE_CHECKING:
    from core.config import StoryboardConfig
    from core.sagemaker_config import SageMakerSettings


def parameter_defaults(config: StoryboardConfig, settings: SageMakerSettings) -> dict[str, ParameterValue]:
    """Every parameter's default, in definition order.

    Raises:
        core.errors.InputError: ``sagemaker.parameters`` names an unknown parameter or holds a value of
            the wrong type or out of range.
    """
    overrides = dict(config.sagemaker.parameters)
    specs = specs_for(config.finetune.backend)
    known = {spec.name for spec in specs}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InputError(f"sagemaker.parameters: unknown parameter(s) {unknown} for finetune.backend "
                         f"{config.finetune.backend}; known: {sorted(known)}")
    values: dict[str, ParameterValue] = {}
    for spec in specs:
        if spec.name in overrides:
            values[spec.name] = coerce_value(spec, overrides[spec.name], source="sagemaker.parameters")
        else:
            values[spec.name] = coerce_value(spec, spec.default(config, settings), source=spec.source)
    return values


def coerce_value(spec: ParameterSpec, value: Any, source: str = "--param") -> ParameterValue:
    """Convert ``value`` (a string from the command line, or a YAML scalar) to the parameter's type.

    Raises:
        core.errors.InputError: not convertible, not among ``spec.enum``, or outside the range.
    """
    try:
        if spec.type == "Integer":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            converted: ParameterValue = int(value) if not isinstance(value, str) else int(value.strip())
        elif spec.type == "Float":
            converted = float(value)
        else:
            converted = str(value)
    except (TypeError, ValueError):
        raise InputError(f"{source}: parameter {spec.name} is {spec.type}; cannot use {value!r}") from None
    if spec.enum is not None and converted not in spec.enum:
        raise InputError(f"{source}: parameter {spec.name} must be one of {list(spec.enum)}, got {value!r}")
    if isinstance(converted, (int, float)):
        if (spec.minimum is not None and converted < spec.minimum) or (
                spec.maximum is not None and converted > spec.maximum):
            raise InputError(f"{source}: parameter {spec.name}={converted} is outside {spec.minimum}..{spec.maximum}")
    if spec.multiple_of and isinstance(converted, int) and converted % spec.multiple_of:
        raise InputError(f"{source}: parameter {spec.name}={converted} must be a multiple of {spec.multiple_of}")
    return converted


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """Parse ``["Name=Value", ...]`` from ``--param`` options into a mapping (values stay strings).

    Raises:
        core.errors.InputError: an item has no ``=`` or repeats a name.
    """
    result: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InputError(f"--param {item!r}: expected Name=Value, for example --param stepCount=1000")
        if name in result:
            raise InputError(f"--param {name} given twice")
        result[name] = value
    return result


def unknown_parameter_error(name: str, known: Iterable[str], source: str = "--param") -> InputError:
    """The error for a parameter name the pipeline does not have: the closest names (``difflib``, case
    ignored) and the full list of valid names."""
    names = sorted(known)
    by_lower = {n.lower(): n for n in names}
    close = [by_lower[m] for m in difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)]
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    spec = next((s for s in PARAMETER_SPECS if s.name.lower() == name.lower()), None)
    if spec is not None and spec.name not in names:
        hint += (f" {spec.name} is a parameter of pipelines compiled with finetune.backend "
                 f"{' or '.join(spec.backends)}.")
    return InputError(f"{source}: unknown pipeline parameter {name!r}.{hint} Valid names: {', '.join(names)}")


def check_overrides(overrides: Mapping[str, Any], known: Mapping[str, str] | None = None,
                    source: str = "--param") -> dict[str, ParameterValue]:
    """Validate ``--param`` overrides against the specs; return them converted to their types.

    ``known`` maps the names of the pipeline's parameters to their definition types; a name outside it
    is refused (a parameter of the other fine-tune backend, for example). Parameters in ``known`` but not
    in :data:`PARAMETER_SPECS` (a definition compiled by another version) are passed through as strings.
    Without ``known`` every name in :data:`PARAMETER_SPECS` is accepted.

    Raises:
        core.errors.InputError: an unknown name (the message suggests the closest names and lists the
            valid ones), or a value of the wrong type, outside the allowed values or the range.
    """
    valid = set(known) if known is not None else set(SPECS_BY_NAME)
    for name in overrides:
        if name not in valid:
            raise unknown_parameter_error(name, valid, source)
    converted: dict[str, ParameterValue] = {}
    for name, value in overrides.items():
        spec = SPECS_BY_NAME.get(name)
        converted[name] = coerce_value(spec, value, source=source) if spec else str(value)
    return converted


def build_parameters(config: StoryboardConfig, settings: SageMakerSettings) -> dict[str, Any]:
    """SDK parameter objects (``ParameterString`` / ``ParameterInteger`` / ``ParameterFloat``) by name.

    Imports the SageMaker SDK; call it after :func:`pipeline.compile.prepare_sdk_environment`.
    """
    from sagemaker.core.workflow.parameters import ParameterFloat, ParameterInteger, ParameterString

    defaults = parameter_defaults(config, settings)
    built: dict[str, Any] = {}
    for spec in specs_for(config.finetune.backend):
        default = defaults[spec.name]
        if spec.type == "String":
            built[spec.name] = ParameterString(spec.name, default_value=str(default),
                                               enum_values=list(spec.enum) if spec.enum else None)
        elif spec.type == "Integer":
            built[spec.name] = ParameterInteger(spec.name, default_value=int(default))
        else:
            built[spec.name] = ParameterFloat(spec.name, default_value=float(default))
    return built


def describe_parameters(defaults: Mapping[str, ParameterValue] | None = None, width: int = 100) -> str:
    """A plain-text table of the parameters: name, type, default and description (for help and README).

    Parameters of one fine-tune backend only are marked with it.
    """
    import textwrap

    lines = []
    for spec in PARAMETER_SPECS:
        default = "" if defaults is None else f" (default: {defaults.get(spec.name)!r})"
        only = f" ({spec.backends[0]} backend)" if len(spec.backends) == 1 else ""
        lines.append(f"{spec.name} [{spec.type}]{default}{only}")
        lines.extend(textwrap.wrap(spec.description, width=width, initial_indent="    ", subsequent_indent="    "))
    return "\n".join(lines)
