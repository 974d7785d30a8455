"""The ``sagemaker`` section of ``pipeline.yaml``: pipeline name, role, bucket, images, queues, caching.

Every value here is optional: with none set, ``storyboard compile`` still produces a complete
definition offline, using names derived from the project name and from the account of the role ARN
(:func:`resolve_settings`). ``storyboard upsert`` refuses to create a pipeline without a real role.

Sources of the limits quoted below:

- Pipeline names: SageMaker API ``CreatePipeline`` (``PipelineName`` pattern
  ``^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,255}``), description at most 3,072 characters.
- Processing: ``CreateProcessingJob`` (``InstanceCount`` 1..100, ``VolumeSizeInGB`` 1..16,384,
  ``MaxRuntimeInSeconds`` 1..777,600).
- Training: ``CreateTrainingJob`` (``StoppingCondition.MaxRuntimeInSeconds`` at least 1, at most 28 days
  for a job, ``MaxWaitTimeInSeconds`` at least ``MaxRuntimeInSeconds`` and only with managed spot
  training; ``VolumeSizeInGB`` at least 1).
- Caching: "Caching pipeline steps" in the SageMaker developer guide (``ExpireAfter`` is an ISO 8601
  duration such as ``P30D`` or ``PT12H``).
- Retry policies: "Retry policy for pipeline steps" (``MaxAttempts`` 1..20, interval and backoff).
- Tags: at most 50 per resource, keys 1..128 and values 0..256 characters (AWS tagging rules).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import Field, field_validator, model_validator

from core.config_base import StrictModel

if TYPE_CHECKING:
    from core.config import StoryboardConfig

ROLE_ARN_ENV = "STORYBOARD_ROLE_ARN"
BUCKET_ENV = "STORYBOARD_BUCKET"

# Account used in derived names when no role ARN is known (offline compile only; upsert refuses it).
PLACEHOLDER_ACCOUNT = "000000000000"

ROLE_ARN_PATTERN = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@/-]+$"
PIPELINE_NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$"
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
ISO_DURATION_PATTERN = r"^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+S)?)?$"


class RetryConfig(StrictModel):
    """Retry policy of the processing steps (SageMaker "Retry policy for pipeline steps").

    Throttling and service faults of the step itself, and processing-job capacity, resource-limit and
    internal errors, are retried ``max_attempts`` times with exponential backoff starting at
    ``interval_s`` seconds.
    """

    max_attempts: int = Field(5, ge=1, le=20, description="Attempts per exception type (1..20).")
    interval_s: int = Field(30, ge=1, le=3600, description="Seconds before the first retry.")
    backoff_rate: float = Field(2.0, ge=1.0, le=10.0, description="Multiplier of the interval per retry.")


class SageMakerConfig(StrictModel):
    """Settings of the SageMaker Pipeline definition and of the commands that deploy and start it.

    Attributes:
        pipeline_name: SageMaker pipeline name; default ``<project>-pipeline``.
        description: pipeline description shown in Studio; default: a summary with the parameters.
        role_arn: execution role of the pipeline and its processing jobs. The environment variable
            ``STORYBOARD_ROLE_ARN`` and the ``--role-arn`` option take precedence.
        bucket: S3 bucket for step outputs and the uploaded configuration; default
            ``sagemaker-<region>-<account>`` (the SDK's default bucket), the account taken from the role
            ARN. ``STORYBOARD_BUCKET`` takes precedence.
        prefix: key prefix under the bucket.
        processing_image_uri: ECR image built from ``containers/processing/Dockerfile``; default
            ``<account>.dkr.ecr.<region>.amazonaws.com/<project>-processing:latest``.
        training_image_uri / inference_image_uri: ECR images built from ``containers/training/Dockerfile``
            and ``containers/inference/Dockerfile``; default ``<account>.dkr.ecr.<region>.amazonaws.com/
            <project>-training:latest`` and ``...-inference:latest``.
        training_instance_type: default of the ``TrainingInstanceType`` parameter (a GPU instance).
        training_use_spot: managed spot training (``EnableManagedSpotTraining``); the job resumes from
            its last checkpoint after an interruption. ``training_max_wait_s`` bounds the wait for spot
            capacity plus the run.
        evaluation_instance_type: default of ``EvaluationInstanceType``: the Evaluate job generates images
            with the base and the fine-tuned model, so it wants a GPU.
        processing_instance_type / processing_instance_count: defaults of the pipeline parameters
            ``ProcessingInstanceType`` and ``ProcessingInstanceCount`` (ExtractFrames scales out over
            videos with ``ShardedByS3Key``; CaptionImages and Evaluate run on one instance).
        review_queue_url / finetune_queue_url: SQS queues of the HumanReview and FineTune callback
            steps (one consumer may serve both: the message carries ``Task``); default
            ``https://sqs.<region>.amazonaws.com/<account>/<project>-pipeline-callbacks``.
        register_function_arn: Lambda function of the RegisterModel step; default
            ``arn:aws:lambda:<region>:<account>:function:<project>-register-model``.
        studio_domain_id: SageMaker Studio domain for the execution link printed by ``start``.
        stack_name: CloudFormation stack made by ``storyboard deploy`` (``pipeline/infra/template.yaml``); when
            set (or given as ``--stack-name``), ``upsert`` and ``start`` take the role, bucket, images, queue
            and function ARNs from its outputs instead of the fields above.
        tags: tags of the pipeline and of its processing jobs.
        cache_processing: cache the processing steps (keyed on their arguments, which include input
            URIs but not the objects under them: upload new footage under a new prefix).
        cache_expire_after: ISO 8601 duration of a cache entry.
        telemetry_opt_out: turn off the SageMaker Python SDK's usage telemetry (on by default).
        parameters: overrides of pipeline-parameter defaults by parameter name (see
            ``pipeline/parameters.py``); without one, a default comes from the owning section.
    """

    pipeline_name: str | None = Field(None, pattern=PIPELINE_NAME_PATTERN, max_length=256)
    description: str | None = Field(None, max_length=3072)
    role_arn: str | None = Field(None, pattern=ROLE_ARN_PATTERN, max_length=2048)
    bucket: str | None = Field(None, pattern=BUCKET_PATTERN)
    prefix: str = Field("storyboard", pattern=r"^[A-Za-z0-9!_.*'()/-]{1,200}$",
                        description="S3 key prefix (no leading or trailing slash).")
    processing_image_uri: str | None = Field(None, min_length=1, max_length=255)
    processing_instance_type: str = Field("ml.m5.xlarge", pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
    processing_instance_count: int = Field(1, ge=1, le=100)
    processing_volume_size_gb: int = Field(30, ge=1, le=16384)
    processing_max_runtime_s: int = Field(4 * 3600, ge=60, le=777600)
    training_image_uri: str | None = Field(None, min_length=1, max_length=255)
    inference_image_uri: str | None = Field(None, min_length=1, max_length=255)
    training_instance_type: str = Field("ml.g5.2xlarge", pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
    training_volume_size_gb: int = Field(100, ge=1, le=16384)
    training_max_runtime_s: int = Field(24 * 3600, ge=60, le=28 * 24 * 3600)
    training_use_spot: bool = False
    training_max_wait_s: int = Field(48 * 3600, ge=60, le=28 * 24 * 3600)
    evaluation_instance_type: str = Field("ml.g5.2xlarge", pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
    review_queue_url: str | None = Field(None, pattern=r"^https://sqs\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/\d{12}/.+$")
    finetune_queue_url: str | None = Field(None,
                                           pattern=r"^https://sqs\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/\d{12}/.+$")
    register_function_arn: str | None = Field(None, pattern=r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:.+$")
    studio_domain_id: str | None = Field(None, pattern=r"^d-[a-z0-9]+$")
    stack_name: str | None = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9-]{0,127}$")
    tags: dict[str, str] = Field(default_factory=lambda: {"Project": "storyboard"})
    cache_processing: bool = True
    cache_expire_after: str = Field("P30D", min_length=3, max_length=32)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    telemetry_opt_out: bool = True
    parameters: dict[str, str | int | float] = Field(default_factory=dict)

    @field_validator("cache_expire_after")
    @classmethod
    def _iso_duration(cls, value: str) -> str:
        if not re.fullmatch(ISO_DURATION_PATTERN, value):
            raise ValueError(f"{value!r} is not an ISO 8601 duration such as P30D, PT12H or P1DT6H")
        return value

    @model_validator(mode="after")
    def _spot_wait(self) -> SageMakerConfig:
        if self.training_use_spot and self.training_max_wait_s < self.training_max_runtime_s:
            raise ValueError(f"training_max_wait_s ({self.training_max_wait_s}) must be at least "
                             f"training_max_runtime_s ({self.training_max_runtime_s}) with managed spot training "
                             "(CreateTrainingJob StoppingCondition)")
        return self

    @field_validator("tags")
    @classmethod
    def _tag_limits(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 50:
            raise ValueError(f"at most 50 tags, got {len(value)}")
        for key, val in value.items():
            if not 1 <= len(key) <= 128 or len(val) > 256 or key.lower().startswith("aws:"):
                raise ValueError(f"tag {key!r}: keys are 1..128 characters and may not start with 'aws:', "
                                 "values at most 256 characters")
        return value


@dataclass(frozen=True)
class SageMakerSettings:
    """Concrete values for one compile: every name resolved, nothing left to the network.

    ``placeholders`` names the settings that were derived from the placeholder account
    (``000000000000``) because no role ARN was configured: fine for ``compile`` and the local runner,
    refused by ``upsert``.
    """

    region: str
    account: str
    pipeline_name: str
    role_arn: str
    bucket: str
    prefix: str
    processing_image_uri: str
    training_image_uri: str
    inference_image_uri: str
    review_queue_url: str
    finetune_queue_url: str
    register_function_arn: str
    placeholders: tuple[str, ...]

    @property
    def base_uri(self) -> str:
        """``s3://<bucket>/<prefix>``: the root of every S3 location the pipeline writes."""
        return f"s3://{self.bucket}/{self.prefix.strip('/')}"


def account_from_arn(arn: str) -> str | None:
    """The 12-digit account ID in an ARN (``arn:partition:service:region:account:...``), or ``None``."""
    parts = arn.split(":")
    if len(parts) >= 5 and re.fullmatch(r"\d{12}", parts[4]):
        return parts[4]
    return None


def resolve_settings(config: StoryboardConfig, role_arn: str | None = None,
                     bucket: str | None = None) -> SageMakerSettings:
    """Resolve the ``sagemaker`` section of ``config`` into :class:`SageMakerSettings`, offline.

    Precedence for the role: ``role_arn`` argument, then ``$STORYBOARD_ROLE_ARN``, then
    ``sagemaker.role_arn``; for the bucket: ``bucket`` argument, ``$STORYBOARD_BUCKET``,
    ``sagemaker.bucket``, then ``sagemaker-<region>-<account>``.

    Raises:
        core.errors.InputError: a role ARN from the argument or the environment is malformed.
    """
    from core.errors import InputError

    sm = config.sagemaker
    region = config.aws.region
    role = role_arn or os.environ.get(ROLE_ARN_ENV) or sm.role_arn
    placeholders: list[str] = []
    if role and not re.fullmatch(ROLE_ARN_PATTERN, role):
        raise InputError(f"role ARN {role!r} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>); "
                         f"fix --role-arn, ${ROLE_ARN_ENV} or sagemaker.role_arn")
    account = account_from_arn(role) if role else None
    if account is None:
        account = PLACEHOLDER_ACCOUNT
        role = f"arn:aws:iam::{PLACEHOLDER_ACCOUNT}:role/{config.project}-pipeline-role"
        placeholders.append("role_arn")
    bucket_name = bucket or os.environ.get(BUCKET_ENV) or sm.bucket
    if not bucket_name:
        bucket_name = f"sagemaker-{region}-{account}"
        if "role_arn" in placeholders:
            placeholders.append("bucket")
    elif not re.fullmatch(BUCKET_PATTERN, bucket_name):
        raise InputError(f"S3 bucket name {bucket_name!r} is invalid (3..63 lower-case letters, digits, '.', '-')")
    default_queue = f"https://sqs.{region}.amazonaws.com/{account}/{config.project}-pipeline-callbacks"

    def derived(value: str | None, fallback: str, name: str) -> str:
        if value:
            return value
        if "role_arn" in placeholders:
            placeholders.append(name)
        return fallback

    return SageMakerSettings(
        region=region,
        account=account,
        pipeline_name=sm.pipeline_name or f"{config.project}-pipeline",
        role_arn=role,
        bucket=bucket_name,
        prefix=sm.prefix.strip("/"),
        processing_image_uri=derived(
            sm.processing_image_uri,
            f"{account}.dkr.ecr.{region}.amazonaws.com/{config.project}-processing:latest",
            "processing_image_uri"),
        training_image_uri=derived(
            sm.training_image_uri,
            f"{account}.dkr.ecr.{region}.amazonaws.com/{config.project}-training:latest",
            "training_image_uri"),
        inference_image_uri=derived(
            sm.inference_image_uri,
            f"{account}.dkr.ecr.{region}.amazonaws.com/{config.project}-inference:latest",
            "inference_image_uri"),
        review_queue_url=derived(sm.review_queue_url, default_queue, "review_queue_url"),
        finetune_queue_url=derived(sm.finetune_queue_url, default_queue, "finetune_queue_url"),
        register_function_arn=derived(
            sm.register_function_arn,
            f"arn:aws:lambda:{region}:{account}:function:{config.project}-register-model",
            "register_function_arn"),
        placeholders=tuple(placeholders),
    )
