"""Compile the pipeline definition offline and deterministically.

``Pipeline.definition()`` of the SageMaker Python SDK v3 stays offline when every code and output
location is an S3 URI, the Lambda step has a function ARN and the session's bucket is set (DESIGN §5);
:func:`compile_definition` arranges all three, turns the SDK's usage telemetry off (``TelemetryOptOut``
in the session's SDK defaults) and keeps botocore away from the EC2 instance metadata service while the
SDK is imported (``sagemaker.mlops`` creates a boto3 client at import time, which otherwise looks for
credentials on the network). The JSON is written with sorted keys, so two compiles of one configuration
are byte-identical.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from core.sagemaker_config import SageMakerSettings, resolve_settings

if TYPE_CHECKING:
    from core.config import StoryboardConfig

_SDK_LOGGERS = ("sagemaker", "sagemaker.config", "sagemaker.core", "sagemaker.mlops")


def sdk_defaults(config: StoryboardConfig) -> dict[str, Any]:
    """The SageMaker SDK defaults configuration passed to the session (``TelemetryOptOut``)."""
    return {"SchemaVersion": "1.0",
            "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": bool(config.sagemaker.telemetry_opt_out)}}}}


@contextlib.contextmanager
def offline_environment(region: str) -> Iterator[None]:
    """Within the block: a region is set, botocore never asks the instance metadata service, and the SDK's
    ``ModelTrainer`` does not simulate the training role's IAM policies (``SAGEMAKER_VALIDATE_ROLE=false``:
    compiling sends nothing; ``storyboard upsert`` checks the role).

    Only variables that were not set are added, and they are removed again on exit.
    """
    added = {}
    for key, value in (("AWS_DEFAULT_REGION", region), ("AWS_EC2_METADATA_DISABLED", "true"),
                       ("SAGEMAKER_VALIDATE_ROLE", "false")):
        if key not in os.environ:
            os.environ[key] = value
            added[key] = value
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


@contextlib.contextmanager
def quiet_sdk() -> Iterator[None]:
    """Silence the SDK's informational logs and warnings about PipelineSession and Lambda updates."""
    levels = {name: logging.getLogger(name).level for name in _SDK_LOGGERS}
    for name in _SDK_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    wf_logger = logging.getLogger("sagemaker.core.workflow.utilities")
    wf_level = wf_logger.level
    wf_logger.setLevel(logging.ERROR)  # "Popping out 'ProcessingJobName'": expected, the service names jobs
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Running within a PipelineSession.*")
            warnings.filterwarnings("ignore", message=".*Lambda function won't be updated.*")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        wf_logger.setLevel(wf_level)


def _validate_sdk_defaults_once() -> None:
    """Make the SDK validate one SDK-defaults mapping once instead of at every lookup.

    The SDK re-validates the session's defaults configuration against its JSON schema on every
    configuration lookup (about 0.3 s each, some fifty per compile). The same mapping gives the same
    answer, so each distinct mapping is validated once; an invalid one still raises every time. If the
    SDK moves the function, nothing is patched and compiling is only slower.
    """
    try:
        from sagemaker.core.config import config_manager
    except ImportError:
        return
    holder = getattr(config_manager, "SageMakerConfig", None)
    original = getattr(holder, "validate_sagemaker_config", None)
    if original is None or getattr(original, "_storyboard_memo", False):
        return
    validated: set[str] = set()

    def validate(sagemaker_config: dict | None = None) -> None:
        key = json.dumps(sagemaker_config, sort_keys=True, default=str)
        if key not in validated:
            original(sagemaker_config)
            validated.add(key)

    validate._storyboard_memo = True  # type: ignore[attr-defined]
    holder.validate_sagemaker_config = staticmethod(validate)


def make_pipeline_session(config: StoryboardConfig, settings: SageMakerSettings,
                          boto_session: Any | None = None) -> Any:
    """A ``PipelineSession`` with the bucket and prefix set and telemetry off.

    ``boto_session`` defaults to a new ``boto3.Session`` in the configured region (with
    ``aws.profile``); creating it sends nothing.
    """
    import boto3
    from sagemaker.core.workflow.pipeline_context import PipelineSession

    _validate_sdk_defaults_once()
    if boto_session is None:
        boto_session = boto3.Session(region_name=settings.region, profile_name=config.aws.profile)
    return PipelineSession(boto_session=boto_session, default_bucket=settings.bucket,
                           default_bucket_prefix=settings.prefix, sagemaker_config=sdk_defaults(config))


def build_pipeline(config: StoryboardConfig, settings: SageMakerSettings | None = None,
                   boto_session: Any | None = None) -> Any:
    """The SDK ``Pipeline`` object for ``config`` (see :func:`pipeline.definition.get_pipeline`)."""
    from pipeline.definition import get_pipeline

    settings = settings or resolve_settings(config)
    with offline_environment(settings.region), quiet_sdk():
        session = make_pipeline_session(config, settings, boto_session=boto_session)
        return get_pipeline(config, session, settings=settings)


def compile_definition(config: StoryboardConfig, settings: SageMakerSettings | None = None) -> dict[str, Any]:
    """Compile ``config`` to the pipeline definition (the JSON SageMaker stores), as a mapping.

    Offline: no request is sent. Raises ``core.errors.InputError`` for an invalid parameter default.
    """
    settings = settings or resolve_settings(config)
    pipeline = build_pipeline(config, settings)
    with offline_environment(settings.region), quiet_sdk():
        return json.loads(pipeline.definition())


def definition_to_json(definition: dict[str, Any]) -> str:
    """Canonical text of a definition: sorted keys, two-space indent, trailing newline."""
    return json.dumps(definition, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
