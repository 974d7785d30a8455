"""Shared plumbing of the processing entry points: paths, host identity, configuration, exit codes.

Exit codes: 0 success; 2 bad input (``core.errors.InputError`` or an invalid configuration; the message
is printed without a traceback); 1 any other error (with its traceback). SageMaker shows the job's
failure reason and CloudWatch log; the local runner keeps the output in ``<step>/step.log``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.config import StoryboardConfig

PROCESSING_ROOT = Path("/opt/ml/processing")
PROCESSING_ROOT_ENV = "STORYBOARD_PROCESSING_ROOT"
RESOURCE_CONFIG_ENV = "STORYBOARD_RESOURCE_CONFIG"
# SageMaker Processing writes the cluster layout here ("How Amazon SageMaker Processing runs your
# processing container image": current_host and hosts).
SAGEMAKER_RESOURCE_CONFIG = Path("/opt/ml/config/resourceconfig.json")
CONFIG_NAMES = ("pipeline.json", "pipeline.yaml", "pipeline.yml")

log = logging.getLogger("containers.processing")


def base_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with ``--processing-root`` (default: ``$STORYBOARD_PROCESSING_ROOT`` or
    ``/opt/ml/processing``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--processing-root", default=None,
                        help=f"folder standing for {PROCESSING_ROOT} (default: ${PROCESSING_ROOT_ENV} or "
                             f"{PROCESSING_ROOT})")
    return parser


def processing_root(value: str | None = None) -> Path:
    """The processing root: ``value``, else ``$STORYBOARD_PROCESSING_ROOT``, else ``/opt/ml/processing``."""
    return Path(value or os.environ.get(PROCESSING_ROOT_ENV) or PROCESSING_ROOT)


def current_host() -> tuple[str, list[str]]:
    """``(current_host, hosts)`` from the resource configuration; ``("algo-1", ["algo-1"])`` without one.

    The file is ``$STORYBOARD_RESOURCE_CONFIG`` or ``/opt/ml/config/resourceconfig.json``.
    """
    path = Path(os.environ.get(RESOURCE_CONFIG_ENV) or SAGEMAKER_RESOURCE_CONFIG)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        host = str(data["current_host"])
        hosts = [str(h) for h in data.get("hosts", [host])]
        return host, hosts
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return "algo-1", ["algo-1"]


def load_step_config(folder: Path, overrides: Mapping[str, Any] | None = None) -> StoryboardConfig:
    """Load the configuration in ``folder`` (``pipeline.json`` or ``pipeline.yaml``) and apply ``overrides``.

    ``overrides`` maps dotted keys (``"sampling.every_s"``) to values; ``None`` values are skipped. The
    result is validated again, so an out-of-range parameter fails here with the key's name.

    Raises:
        core.errors.InputError: no configuration file in ``folder``.
        core.config.ConfigError: the file or an override is invalid.
    """
    import yaml

    from core.config import parse_config
    from core.errors import InputError

    found = [folder / name for name in CONFIG_NAMES if (folder / name).is_file()]
    if not found:
        found = sorted(p for p in folder.glob("*") if p.suffix in (".json", ".yaml", ".yml")) if folder.is_dir() else []
    if not found:
        raise InputError(f"no configuration in {folder}: the config input must hold pipeline.json (storyboard upsert "
                         "uploads it to PipelineConfigS3Uri)")
    text = found[0].read_text(encoding="utf-8")
    data = json.loads(text) if found[0].suffix == ".json" else yaml.safe_load(text)
    data = dict(data or {})
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return parse_config(data, source=f"{found[0]} with the step's arguments")


def optional(value: str | None) -> str | None:
    """``None`` for an empty or placeholder argument (``""``, ``"none"``, ``"null"``), else the value."""
    if value is None or value.strip().lower() in ("", "none", "null"):
        return None
    return value


def to_json(result: Any) -> Any:
    """A step function's result as JSON-ready data: its ``to_json()``, or the mapping itself."""
    return result.to_json() if hasattr(result, "to_json") else result


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run an entry point's ``main`` with logging set up and the exit-code convention of this module."""
    from core.config import ConfigError
    from core.errors import InputError

    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(main(argv) or 0)
    except (InputError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
