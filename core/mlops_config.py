"""The ``review``, ``finetune`` and ``registry`` sections of ``pipeline.yaml`` (steps 3, 4 and 7).

Limits quoted here come from DESIGN.md §5 and the service models botocore ships:

- The LoRA fine-tune (``finetune.backend: sagemaker``): ranges of ``core.lora_settings`` (the training
  entry point checks the same ranges on the hyperparameters SageMaker hands it).

- Nova Canvas fine-tuning hyperparameters (Amazon Nova user guide, "Hyperparameters for image
  generation models"): ``stepCount`` 10 to 20,000 (default 500), ``batchSize`` 8 to 192 (default 8),
  ``learningRate`` 1e-7 to 1e-4 (default 1e-5). Bedrock takes them as strings.
- Amazon A2I (SageMaker API reference, ``CreateFlowDefinition``): ``TaskCount`` 1 to 3, names
  ``[a-z0-9](-*[a-z0-9])*`` of at most 63 characters, ``TaskTimeLimitInSeconds`` at least 30; at most
  5,000 human loops in flight per flow definition with a private workforce (A2I quotas).
- Bedrock Provisioned Throughput (``CreateProvisionedModelThroughput``): ``modelUnits`` at least 1,
  ``commitmentDuration`` ``OneMonth`` or ``SixMonths``; omitted means no commitment (billed hourly).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from core.config_base import StrictModel
from core.lora_settings import HYPERPARAMETER_LIMITS as LORA_LIMITS
from core.lora_settings import RESOLUTION_MULTIPLE

# Nova Canvas fine-tuning hyperparameter bounds (DESIGN §5; Amazon Nova user guide).
STEP_COUNT_MIN, STEP_COUNT_MAX, STEP_COUNT_DEFAULT = 10, 20_000, 500
BATCH_SIZE_MIN, BATCH_SIZE_MAX, BATCH_SIZE_DEFAULT = 8, 192, 8
LEARNING_RATE_MIN, LEARNING_RATE_MAX, LEARNING_RATE_DEFAULT = 1e-7, 1e-4, 1e-5

NOVA_CANVAS_MODEL_ID = "amazon.nova-canvas-v1:0"
SDXL_BASE_MODEL_ID = "stabilityai/stable-diffusion-xl-base-1.0"

# A2I limits (SageMaker API reference CreateFlowDefinition / StartHumanLoop; A2I quotas page).
A2I_NAME_PATTERN = r"^[a-z0-9](-*[a-z0-9]){0,62}$"
A2I_MAX_LOOPS_IN_FLIGHT = 5000
WORKTEAM_ARN_PATTERN = r"^arn:aws[a-z\-]*:sagemaker:[a-z0-9\-]*:[0-9]{12}:workteam/.+$"
FLOW_DEFINITION_ARN_PATTERN = r"^arn:aws[a-z\-]*:sagemaker:[a-z0-9\-]*:[0-9]{12}:flow-definition/.+$"
ROLE_ARN_PATTERN = r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-/]+$"
S3_URI_PATTERN = r"^s3://[a-z0-9][-.a-z0-9]{1,61}[a-z0-9](/.*)?$"
MODEL_PACKAGE_GROUP_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
ENDPOINT_NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"


class AutoReviewPolicyConfig(StrictModel):
    """Rules of the automatic review policy (``review.mode: auto``; also ``ReviewMode=auto``).

    A record is approved when it passes every check; each decision lists its reasons in the reviewed
    manifest. ``edited`` means the policy changed the caption (whitespace normalised).
    """

    reject_needs_review: bool = Field(
        True, description="Reject records the captioner flagged needs_review (its answer was unusable and a "
                          "template caption replaced it). false: approve them if they pass the other checks.")
    require_character_name: bool = Field(
        True, description="Reject a caption that does not name the record's character (metadata 'character').")
    check_images: bool = Field(
        True, description="Open every image and check it against the Nova Canvas limits (format, size, pixels, "
                          "aspect ratio, bytes). false: check only the image reference's form.")
    normalise_whitespace: bool = Field(
        True, description="Collapse runs of whitespace in captions and strip them; a changed caption counts "
                          "as edited.")
    reject_duplicate_images: bool = Field(True, description="Reject a second record with the same image_ref.")


class ReviewConfig(StrictModel):
    """Human review (Amazon A2I) or the automatic local policy (step 3, HumanReview).

    ``mode`` is the default of the pipeline parameter ``ReviewMode``. With ``a2i``, the callback
    consumer creates (idempotently) the human task UI and the flow definition unless
    ``flow_definition_arn`` names an existing one, then starts one human loop per manifest record.
    A2I needs ``workteam_arn``, ``role_arn`` and ``output_s3_uri``; they are checked when the review
    starts, with a message naming the missing key.
    """

    mode: Literal["auto", "a2i"] = Field("auto", description="auto: the policy below (offline); a2i: Amazon A2I "
                                                             "human loops (needs AWS).")
    flow_definition_name: str | None = Field(
        None, pattern=A2I_NAME_PATTERN, description="A2I flow definition name; default '<project>-review'.")
    flow_definition_arn: str | None = Field(
        None, pattern=FLOW_DEFINITION_ARN_PATTERN, description="Use this existing flow definition instead of "
                                                               "creating one.")
    human_task_ui_name: str | None = Field(
        None, pattern=A2I_NAME_PATTERN, description="Worker task template name; default '<project>-review-ui'.")
    workteam_arn: str | None = Field(None, pattern=WORKTEAM_ARN_PATTERN, description="Private workteam ARN.")
    role_arn: str | None = Field(None, pattern=ROLE_ARN_PATTERN,
                                 description="A2I execution role (reads the images, writes the output prefix).")
    output_s3_uri: str | None = Field(
        None, pattern=S3_URI_PATTERN,
        description="s3://bucket/prefix: A2I output (<prefix>/a2i/), review state and reviewed manifests.")
    task_title: str = Field("Review a character crop and its caption", min_length=1, max_length=128)
    task_description: str = Field(
        "Approve the image and caption, edit the caption, or reject the image.", min_length=1, max_length=255)
    task_count: int = Field(1, ge=1, le=3, description="Workers per image (A2I TaskCount 1 to 3).")
    task_time_limit_s: int = Field(600, ge=30, le=28_800, description="Seconds a worker has for one task.")
    task_availability_s: int = Field(864_000, ge=60, le=864_000,
                                     description="Seconds a task stays available to workers (at most 10 days).")
    max_loops: int = Field(A2I_MAX_LOOPS_IN_FLIGHT, ge=1, le=A2I_MAX_LOOPS_IN_FLIGHT,
                           description="Most human loops one review starts (A2I: 5,000 in flight per flow "
                                       "definition with a private workforce).")
    watchdog_hours: float = Field(240.0, gt=0.0, le=24 * 30,
                                  description="A review still open after this many hours is stopped and the "
                                              "step fails (the reconciler enforces it).")
    auto: AutoReviewPolicyConfig = Field(default_factory=AutoReviewPolicyConfig)
    local_review_page: bool = Field(
        False, description="ReviewMode a2i in a local run: serve a review page on 127.0.0.1 and wait for the "
                           "answers (true), or fail saying A2I needs AWS (false).")
    local_review_port: int = Field(8765, ge=0, le=65535, description="Port of the local review page (0: any).")
    local_review_timeout_s: float | None = Field(None, gt=0, description="Give up waiting for local answers "
                                                                         "after this many seconds.")


class HyperParameters(StrictModel):
    """Nova Canvas fine-tuning hyperparameters with Bedrock's bounds (DESIGN §5).

    The blog's run used ``step_count`` 14,000, ``batch_size`` 64 and ``learning_rate`` 1e-6 (about 4
    hours, up to 12).
    """

    step_count: int = Field(STEP_COUNT_DEFAULT, ge=STEP_COUNT_MIN, le=STEP_COUNT_MAX,
                            description="Training steps (stepCount, 10 to 20,000).")
    batch_size: int = Field(BATCH_SIZE_DEFAULT, ge=BATCH_SIZE_MIN, le=BATCH_SIZE_MAX,
                            description="Images per step (batchSize, 8 to 192).")
    learning_rate: float = Field(LEARNING_RATE_DEFAULT, ge=LEARNING_RATE_MIN, le=LEARNING_RATE_MAX,
                                 description="Learning rate (learningRate, 1e-7 to 1e-4).")

    def to_request(self) -> dict[str, str]:
        """The ``hyperParameters`` map of ``create_model_customization_job``: string values."""
        return {
            "stepCount": str(self.step_count),
            "batchSize": str(self.batch_size),
            "learningRate": format_learning_rate(self.learning_rate),
        }


def format_learning_rate(value: float) -> str:
    """A learning rate as Bedrock's string form, without float noise: ``1e-05`` -> ``"0.00001"``."""
    text = f"{value:.12f}".rstrip("0").rstrip(".")
    return text if float(text) == value else repr(value)


def _lora_range(name: str) -> dict[str, float]:
    """``{"ge": low, "le": high}`` of a LoRA hyperparameter (``core.lora_settings.HYPERPARAMETER_LIMITS``)."""
    low, high = LORA_LIMITS[name]
    return {"ge": low, "le": high}


class LoraConfig(StrictModel):
    """The LoRA fine-tune trained by the SageMaker TrainingStep (``finetune.backend: sagemaker``).

    Each value is the default of a pipeline parameter (``LoraTrainingSteps``, ``LoraLearningRate``,
    ``LoraRank``, ``LoraResolution``, ``LoraBatchSize``, ``TrainingSeed``, ``MixedPrecision``) or a fixed
    hyperparameter of the training job. The defaults follow diffusers' DreamBooth LoRA SDXL example
    (learning rate 1e-4, 500 steps at 1024 px). The base model is a diffusers-format folder under an S3
    prefix (``base_model_s3_uri``; default ``s3://<bucket>/<prefix>/models/stable-diffusion-xl-base-1.0/``):
    copy Stable Diffusion XL base 1.0 there once (its licence, CreativeML Open RAIL++-M, is in the README).
    """

    base_model_id: str = Field(SDXL_BASE_MODEL_ID, min_length=1, max_length=256,
                               description="The base model's name (Hugging Face Hub ID): recorded in the model "
                                           "card and the registry; also loaded from the Hub by a job whose "
                                           "base_model channel holds no diffusers model.")
    base_model_s3_uri: str | None = Field(None, pattern=S3_URI_PATTERN,
                                          description="S3 prefix of the diffusers-format base model.")
    max_train_steps: int = Field(500, **_lora_range("max_train_steps"), description="Optimizer steps.")
    learning_rate: float = Field(1e-4, **_lora_range("learning_rate"), description="AdamW learning rate.")
    lora_rank: int = Field(16, **_lora_range("lora_rank"), description="LoRA rank r of the UNet attention projections.")
    resolution: int = Field(1024, **_lora_range("resolution"), multiple_of=RESOLUTION_MULTIPLE,
                            description="Training image side in px, a multiple of 8 (SDXL: 1024).")
    train_batch_size: int = Field(1, **_lora_range("train_batch_size"), description="Images per device per step.")
    gradient_accumulation_steps: int = Field(1, **_lora_range("gradient_accumulation_steps"),
                                             description="Steps accumulated per optimizer update.")
    seed: int = Field(42, **_lora_range("seed"), description="Seed of sampling, noise and LoRA initialisation.")
    mixed_precision: Literal["no", "fp16", "bf16"] = Field(
        "bf16", description="bf16 on GPUs that have it (g5, p4d, p5); no (fp32) on the CPU.")
    checkpointing_steps: int = Field(100, **_lora_range("checkpointing_steps"),
                                     description="Save a checkpoint every N steps.")
    checkpoints_total_limit: int = Field(2, **_lora_range("checkpoints_total_limit"),
                                         description="Checkpoints kept (older are deleted).")
    min_records: int = Field(5, **_lora_range("min_records"),
                             description="Fewest reviewed records the job accepts (refused before training).")
    caption_token_policy: Literal["truncate", "refuse"] = Field(
        "truncate", description="Captions over the text encoders' 77 tokens: truncate with a warning, or refuse "
                                "the training set.")

    def hyperparameters(self) -> dict[str, str]:
        """The fixed hyperparameters of the training job (strings, as SageMaker passes them); the ones that
        are pipeline parameters are set by the pipeline definition."""
        return {
            "gradient_accumulation_steps": str(self.gradient_accumulation_steps),
            "checkpointing_steps": str(self.checkpointing_steps),
            "checkpoints_total_limit": str(self.checkpoints_total_limit),
            "min_records": str(self.min_records),
            "caption_token_policy": self.caption_token_policy,
            "base_model_id": self.base_model_id,
        }


class FineTuneConfig(StrictModel):
    """Step 4, FineTune: a LoRA on an open-weights model trained by a SageMaker TrainingStep (``backend:
    sagemaker``, the default), or a Bedrock model customization job (``backend: bedrock``).

    Bedrock: Nova Canvas v1 reached end of life on 2026-09-30 and no Bedrock image model accepts
    customization today; the backend stays for one that does. ``dry_run`` (default true) validates the data
    and the request and writes the exact request without starting a job; the pipeline parameter ``DryRun``
    overrides it. A real job needs ``role_arn`` (trusted by ``bedrock.amazonaws.com``) and ``output_s3_uri``.
    The backend is chosen when the pipeline is compiled.
    """

    backend: Literal["sagemaker", "bedrock"] = Field(
        "sagemaker", description="sagemaker: LoRA TrainingStep; bedrock: model customization CallbackStep.")
    lora: LoraConfig = Field(default_factory=LoraConfig)


    base_model_id: str = Field(NOVA_CANVAS_MODEL_ID, min_length=1, max_length=2048,
                               description="Bedrock base model (Nova Canvas fine-tuning: us-east-1 only).")
    hyperparameters: HyperParameters = Field(default_factory=HyperParameters)
    role_arn: str | None = Field(None, pattern=ROLE_ARN_PATTERN, description="Bedrock service role.")
    output_s3_uri: str | None = Field(None, pattern=S3_URI_PATTERN, description="Job output prefix.")
    dry_run: bool = Field(True, description="Validate and write the request only; no job, no cost.")
    job_name_prefix: str = Field("storyboard-canvas", pattern=r"^[a-zA-Z0-9](-?[a-zA-Z0-9]){0,29}$",
                                 description="Prefix of job and custom model names (at most 30 characters).")
    require_active_base_model: bool = Field(
        True, description="Fail before starting when get_foundation_model reports the base model is not ACTIVE "
                          "(Nova Canvas v1 is reported to become Legacy).")
    kms_key_id: str | None = Field(None, min_length=1, max_length=2048, description="customModelKmsKeyId.")
    watchdog_hours: float = Field(16.0, gt=0.0, le=24 * 7,
                                  description="The reconciler stops a job still running after this many hours "
                                              "and fails the step (the blog's job took up to 12 hours).")
    reconcile_lookback_hours: float = Field(72.0, gt=0.0, le=24 * 30,
                                            description="How far back the reconciler looks for jobs.")


class ProvisionedThroughputConfig(StrictModel):
    """Provisioned Throughput created when a model package is approved (a custom Nova Canvas model runs
    only on Provisioned Throughput; creating one needs a quota increase and takes 20 to 30 minutes)."""

    enabled: bool = Field(True, description="Create a throughput on approval.")
    model_units: int = Field(1, ge=1, le=100, description="modelUnits (needs a matching quota).")
    commitment: Literal["none", "OneMonth", "SixMonths"] = Field(
        "none", description="none: no commitment, billed hourly; else commitmentDuration.")
    name: str | None = Field(
        None, pattern=r"^([0-9a-zA-Z][_-]?){1,63}$", max_length=63,
        description="The group's one throughput, re-pointed to each newly approved model (same base model); "
                    "default: named after the model package group.")
    delete_on_reject: bool = Field(True, description="Delete the throughput when the model it serves is rejected.")
    delete_model_on_reject: bool = Field(
        True, description="Delete a rejected package's Bedrock custom model (delete_custom_model) once no "
                          "throughput serves it.")


class EndpointConfig(StrictModel):
    """The SageMaker real-time endpoint created when a LoRA model package (``finetune.backend: sagemaker``) is
    approved; a later approval updates it to the newer package, a rejection of the deployed package deletes it.

    Limits (SageMaker API reference ``CreateEndpoint`` / ``CreateModel``): names at most 63 characters
    ``[a-zA-Z0-9](-*[a-zA-Z0-9])*``; ``InitialInstanceCount`` at least 1 (the cap here, 10, is this project's,
    against runaway cost; the account's instance quota applies too).
    """

    enabled: bool = Field(True, description="Deploy an endpoint on approval (false: approval records nothing).")
    name: str | None = Field(None, pattern=ENDPOINT_NAME_PATTERN, max_length=63,
                             description="Endpoint name; default '<model package group>-endpoint'.")
    instance_type: str = Field("ml.g5.2xlarge", pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$",
                               description="Instance type of the endpoint (one A10G with 24 GB for SDXL; also the "
                                           "package's SupportedRealtimeInferenceInstanceTypes).")
    initial_instance_count: int = Field(1, ge=1, le=10, description="InitialInstanceCount of the variant.")
    role_arn: str | None = Field(
        None, pattern=ROLE_ARN_PATTERN,
        description="SageMaker execution role of the model (reads the artifacts, pulls the image); default: the "
                    "role recorded on the package at registration, else sagemaker.role_arn.")
    delete_on_reject: bool = Field(True, description="Rejecting a package deletes what its deployment created "
                                                     "(the endpoint too when the package is the one deployed).")


class RegistryConfig(StrictModel):
    """SageMaker Model Registry registration (step 7, RegisterModel) and the approval handler."""

    model_package_group_name: str | None = Field(
        None, pattern=MODEL_PACKAGE_GROUP_PATTERN,
        description="Model package group; default '<project>-characters'.")
    approval_status: Literal["PendingManualApproval", "Approved", "Rejected"] = Field(
        "PendingManualApproval", description="Status of a new model package.")
    local_registry_path: str | None = Field(
        None, description="Local registry file; default <runs>/registry.json (shared by the local executions, "
                          "as a group is shared by executions on AWS).")
    provisioned_throughput: ProvisionedThroughputConfig = Field(default_factory=ProvisionedThroughputConfig)
    endpoint: EndpointConfig = Field(default_factory=EndpointConfig)

    @field_validator("local_registry_path")
    @classmethod
    def _json_file(cls, value: str | None) -> str | None:
        if value is not None and not value.endswith(".json"):
            raise ValueError("local_registry_path must name a .json file")
        return value


def flow_definition_name(review: ReviewConfig, project: str) -> str:
    """The flow definition name: configured, or ``<project>-review`` (A2I name rules)."""
    return review.flow_definition_name or _a2i_name(f"{project}-review")


def human_task_ui_name(review: ReviewConfig, project: str) -> str:
    """The worker task template name: configured, or ``<project>-review-ui``."""
    return review.human_task_ui_name or _a2i_name(f"{project}-review-ui")


def model_package_group_name(registry: RegistryConfig, project: str) -> str:
    """The model package group: configured, or ``<project>-characters``."""
    return registry.model_package_group_name or f"{project}-characters"


def endpoint_name(registry: RegistryConfig, project: str) -> str:
    """The endpoint: ``registry.endpoint.name``, or ``<model package group>-endpoint`` (at most 63 characters)."""
    if registry.endpoint.name:
        return registry.endpoint.name
    return f"{model_package_group_name(registry, project)[:54].rstrip('-')}-endpoint"


def _a2i_name(text: str) -> str:
    """Lower-case, hyphen-trimmed, at most 63 characters (A2I name pattern)."""
    return text.lower()[:63].strip("-")
