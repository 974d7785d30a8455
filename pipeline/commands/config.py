"""`storyboard config`: print the effective configuration (``show``) or the built-in defaults (``defaults``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

SHOW_DESCRIPTION = """\
Print the effective configuration as YAML, each value followed by where it came from:
  default            the built-in default (the models in core/config.py; the repository's
                     pipeline.yaml lists them all)
  file <name>        the --config file names it
  env $NAME          an environment variable overrides it ($STORYBOARD_ROLE_ARN, $STORYBOARD_BUCKET)
After the configuration, a commented block lists the pipeline parameters an execution would start with
and where each value came from: --param, sagemaker.parameters, or the configuration key it defaults to.
Without --config, ./pipeline.yaml is read when present (as run, compile and start do).
The output is itself a valid configuration file.
"""

DEFAULTS_DESCRIPTION = """\
Print the built-in defaults as a commented pipeline.yaml (comments from the models' field
descriptions). The repository's pipeline.yaml is this output: after changing a default or a
description in the models, regenerate it with

  storyboard config defaults > pipeline.yaml
"""

ENV_KEYS = {"sagemaker.role_arn": "STORYBOARD_ROLE_ARN", "sagemaker.bucket": "STORYBOARD_BUCKET"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``config show`` and ``config defaults`` to ``subparsers``."""
    parser = subparsers.add_parser(
        "config", help="show the effective configuration and where each value came from, or the defaults",
        description="Inspect the configuration: 'config show' prints the effective values and their sources, "
                    "'config defaults' the built-in defaults (the repository's pipeline.yaml).")
    commands = parser.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    show = commands.add_parser(
        "show", help="print the effective configuration, each value with its source (default, file, env)",
        description=SHOW_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    show.add_argument("--config", type=Path, default=None,
                      help="pipeline.yaml (default: ./pipeline.yaml if present, else built-in defaults)")
    show.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                      help="a pipeline parameter override to show (repeatable; checked as 'run' and 'start' do)")
    show.set_defaults(func=cmd_show)
    defaults = commands.add_parser(
        "defaults", help="print the built-in defaults as a commented pipeline.yaml",
        description=DEFAULTS_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults.set_defaults(func=cmd_defaults)


def cmd_defaults(args: argparse.Namespace) -> int:
    """Print :func:`pipeline.config_yaml.render_defaults`."""
    from pipeline.config_yaml import render_defaults

    sys.stdout.write(render_defaults())
    return 0


def _read_mapping(path: Path) -> dict[str, Any]:
    import yaml

    from core.config import ConfigError

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: {err}") from None
    return data if isinstance(data, dict) else {}


def parameter_lines(config: Any, overrides: dict[str, str]) -> list[str]:
    """Commented lines ``# Name: value  (source)`` for every parameter of the pipeline ``config`` compiles to.

    Raises:
        core.errors.InputError: an unknown parameter name or a bad value in ``overrides``.
    """
    from core.sagemaker_config import resolve_settings
    from pipeline.parameter_values import check_overrides, parameter_defaults
    from pipeline.parameters import specs_for

    specs = specs_for(config.finetune.backend)
    checked = check_overrides(overrides, known={s.name: s.type for s in specs})
    defaults = parameter_defaults(config, resolve_settings(config))
    lines = ["", "# Pipeline parameters of an execution (a --param overrides a value for that execution only):"]
    for spec in specs:
        if spec.name in checked:
            value, source = checked[spec.name], "--param"
        elif spec.name in config.sagemaker.parameters:
            value, source = defaults[spec.name], f"sagemaker.parameters.{spec.name}"
        else:
            value, source = defaults[spec.name], spec.source
        lines.append(f"#   {spec.name}: {value!r}  ({source})")
    return lines


def cmd_show(args: argparse.Namespace) -> int:
    """Print the effective configuration with each value's source, then the parameters."""
    from core.config import DEFAULT_CONFIG_FILE, load_config
    from pipeline.config_yaml import render_effective
    from pipeline.parameter_values import parse_assignments

    path = args.config
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = Path(DEFAULT_CONFIG_FILE)
    overrides = parse_assignments(args.param)
    config = load_config(path)
    env = {key: name for key, name in ENV_KEYS.items() if os.environ.get(name)}
    text = render_effective(config, _read_mapping(path) if path else None, env,
                            source_name=f"file {path}" if path else "file")
    header = f"# effective configuration: built-in defaults, {f'{path}, ' if path else ''}environment\n"
    sys.stdout.write(header + text + "\n".join(parameter_lines(config, overrides)) + "\n")
    return 0
