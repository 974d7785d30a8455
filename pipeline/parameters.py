"""The pipeline parameters users set when they start an execution (in Studio or with ``storyboard start``).

Each parameter has a name, a type, a description and a default. The default comes, in this order, from
``sagemaker.parameters.<Name>`` in ``pipeline.yaml``, from the section that owns the setting (for
example ``sampling.every_s``), or from the fallback written here with its source.

The pipeline definition format has no field for a parameter's description, so the descriptions are
shown in the pipeline's description (Studio's pipeline page), by ``storyboard start --help`` and in the
README; the names are chosen to read on their own in Studio's "Create execution" form.

Which parameters a pipeline has depends on ``finetune.backend`` (chosen when compiling):

- ``sagemaker`` (default): the LoRA TrainingStep's ``BaseModelS3Uri``, ``LoraTrainingSteps``,
  ``LoraLearningRate``, ``LoraRank``, ``LoraResolution``, ``LoraBatchSize``, ``TrainingSeed``,
  ``MixedPrecision``, ``TrainingInstanceType`` and Evaluate's ``EvaluationInstanceType`` (ranges of
  ``core.lora_settings``, the ranges the training entry point itself checks);
- ``bedrock``: ``BaseModelId``, ``stepCount``, ``batchSize``, ``learningRate`` (the spelling of the
  Bedrock hyperparameters they feed; Nova Canvas ranges, DESIGN §5: 10..20,000; 8..192; 1e-7..1e-4) and
  ``DryRun``.

Their values (defaults, checking ``--param`` overrides, the SDK parameter objects) are computed in
:mod:`pipeline.parameter_values`; the configuration behind ``PipelineConfigS3Uri`` in :mod:`pipeline.container_config`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from core.lora_settings import HYPERPARAMETER_LIMITS as LORA_LIMITS
from core.lora_settings import RESOLUTION_MULTIPLE
from core.mlops_config import model_package_group_name
from pipeline.container_config import container_config_bytes

if TYPE_CHECKING:
    from core.config import StoryboardConfig
    from core.sagemaker_config import SageMakerSettings

ParameterType = Literal["String", "Integer", "Float"]
ParameterValue = str | int | float

# Names, used by the step builders and the local runner.
INPUT_VIDEOS = "InputVideosS3Uri"
REFERENCES = "ReferencesS3Uri"
CONFIG_URI = "PipelineConfigS3Uri"
SAMPLING_MODE = "SamplingMode"
SAMPLING_INTERVAL = "SamplingIntervalSeconds"
DEDUP_THRESHOLD = "DedupSimilarityThreshold"
CAPTION_MODEL = "CaptionModelId"
EMBEDDING_MODEL = "EmbeddingModelId"
BASE_MODEL = "BaseModelId"
STEP_COUNT = "stepCount"
BATCH_SIZE = "batchSize"
LEARNING_RATE = "learningRate"
REVIEW_MODE = "ReviewMode"
DRY_RUN = "DryRun"
MIN_SIMILARITY = "MinCharacterSimilarity"
MIN_IMPROVEMENT = "MinImprovementOverBase"
MAX_NEAR_COPY_RATE = "MaxNearCopyRate"
MODEL_PACKAGE_GROUP = "ModelPackageGroupName"
EVALUATION_IMAGES = "EvaluationImagesUri"
INSTANCE_TYPE = "ProcessingInstanceType"
INSTANCE_COUNT = "ProcessingInstanceCount"
# LoRA fine-tune (finetune.backend: sagemaker)
BASE_MODEL_URI = "BaseModelS3Uri"
LORA_STEPS = "LoraTrainingSteps"
LORA_LEARNING_RATE = "LoraLearningRate"
LORA_RANK = "LoraRank"
LORA_RESOLUTION = "LoraResolution"
LORA_BATCH_SIZE = "LoraBatchSize"
TRAINING_SEED = "TrainingSeed"
MIXED_PRECISION = "MixedPrecision"
TRAINING_INSTANCE_TYPE = "TrainingInstanceType"
EVALUATION_INSTANCE_TYPE = "EvaluationInstanceType"

BACKENDS = ("sagemaker", "bedrock")
DEFAULT_BASE_MODEL_KEY = "models/stable-diffusion-xl-base-1.0/"  # under s3://<bucket>/<prefix>/

NOVA_CANVAS_MODEL_ID = "amazon.nova-canvas-v1:0"


def _lora_range(name: str) -> dict[str, float]:
    """``{"minimum", "maximum"}`` of a LoRA hyperparameter: the ranges the training entry point checks."""
    low, high = LORA_LIMITS[name]
    return {"minimum": low, "maximum": high}


@dataclass(frozen=True)
class ParameterSpec:
    """One pipeline parameter.

    Attributes:
        name: parameter name as it appears in the definition and in Studio.
        type: ``String``, ``Integer`` or ``Float`` (the definition's parameter types).
        description: one or two sentences for Studio users.
        source: where the default comes from (a dotted ``pipeline.yaml`` key, or a derived value).
        default: computes the default from the configuration and the resolved SageMaker settings.
        enum: allowed values of a String parameter, or ``None``.
        minimum, maximum: allowed range of a numeric parameter (checked by the command line and the
            local runner; SageMaker itself does not check ranges).
        multiple_of: an Integer parameter must be a multiple of this, or ``None``.
        backends: the ``finetune.backend`` values whose pipelines have this parameter.
    """

    name: str
    type: ParameterType
    description: str
    source: str
    default: Callable[[StoryboardConfig, SageMakerSettings], ParameterValue]
    enum: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    multiple_of: int | None = None
    backends: tuple[str, ...] = BACKENDS


PARAMETER_SPECS: tuple[ParameterSpec, ...] = (
    ParameterSpec(INPUT_VIDEOS, "String",
                  "S3 prefix (or one object) holding the videos to learn from. ExtractFrames shards the "
                  "objects under it across ProcessingInstanceCount instances. Local runs also take a path.",
                  "s3://<bucket>/<prefix>/input/videos/",
                  lambda c, s: f"{s.base_uri}/input/videos/"),
    ParameterSpec(REFERENCES, "String",
                  "S3 prefix with one folder of reference images per character (<prefix>/<character>/*.png, "
                  "optionally references.yaml). Local runs also take a folder.",
                  "s3://<bucket>/<prefix>/input/references/",
                  lambda c, s: f"{s.base_uri}/input/references/"),
    ParameterSpec(CONFIG_URI, "String",
                  "The pipeline.yaml the processing containers read; storyboard upsert uploads it here "
                  "(the key carries the file's hash).",
                  "s3://<bucket>/<prefix>/config/<sha256>/pipeline.json",
                  lambda c, s: _config_uri(c, s)),
    ParameterSpec(SAMPLING_MODE, "String",
                  "Frame sampling: interval (one frame every SamplingIntervalSeconds), keyframes (I-frames "
                  "only, fastest) or shots (one frame per shot plus interval frames in long shots).",
                  "sampling.mode", lambda c, s: c.sampling.mode, enum=("interval", "keyframes", "shots")),
    ParameterSpec(SAMPLING_INTERVAL, "Float",
                  "Seconds between sampled frames in interval and shots modes.",
                  "sampling.every_s", lambda c, s: float(c.sampling.every_s), minimum=0.001, maximum=3600.0),
    ParameterSpec(DEDUP_THRESHOLD, "Float",
                  "Cosine similarity of image embeddings at or above which two crops of one character are "
                  "near-duplicates; the later one is dropped (0 to 1, higher keeps more).",
                  "dedup.threshold", lambda c, s: float(c.dedup.threshold), minimum=0.0, maximum=1.0),
    ParameterSpec(CAPTION_MODEL, "String",
                  "Bedrock model or inference profile that captions the crops (captions.backend nova-pro).",
                  "captions.model_id", lambda c, s: c.captions.model_id),
    ParameterSpec(EMBEDDING_MODEL, "String",
                  "Bedrock image-embedding model for de-duplication and evaluation (embeddings.backend titan).",
                  "embeddings.titan_model_id", lambda c, s: c.embeddings.titan_model_id),
    ParameterSpec(BASE_MODEL, "String",
                  "Nova Canvas base model to fine-tune; it must be ACTIVE in Bedrock (fine-tuning is offered "
                  "in us-east-1).",
                  "finetune.base_model_id", lambda c, s: c.finetune.base_model_id, backends=("bedrock",)),
    ParameterSpec(STEP_COUNT, "Integer",
                  "Bedrock hyperparameter stepCount: training steps (10 to 20,000).",
                  "finetune.hyperparameters.step_count",
                  lambda c, s: c.finetune.hyperparameters.step_count,
                  minimum=10, maximum=20000, backends=("bedrock",)),
    ParameterSpec(BATCH_SIZE, "Integer",
                  "Bedrock hyperparameter batchSize: images per training step (8 to 192).",
                  "finetune.hyperparameters.batch_size",
                  lambda c, s: c.finetune.hyperparameters.batch_size,
                  minimum=8, maximum=192, backends=("bedrock",)),
    ParameterSpec(LEARNING_RATE, "Float",
                  "Bedrock hyperparameter learningRate (1e-7 to 1e-4).",
                  "finetune.hyperparameters.learning_rate",
                  lambda c, s: c.finetune.hyperparameters.learning_rate,
                  minimum=1e-7, maximum=1e-4, backends=("bedrock",)),
    ParameterSpec(DRY_RUN, "String",
                  "true: FineTune validates the data and the Bedrock request and writes the request without "
                  "starting a job (no cost, no model, nothing registered); false: run the customization job.",
                  "finetune.dry_run", lambda c, s: "true" if c.finetune.dry_run else "false",
                  enum=("true", "false"), backends=("bedrock",)),
    ParameterSpec(BASE_MODEL_URI, "String",
                  "S3 prefix of the diffusers-format base model the LoRA is trained on (default: Stable Diffusion "
                  "XL base 1.0 copied under <prefix>/models/). Local runs take a folder, or build a small "
                  "random-weight stand-in of the same architecture.",
                  "finetune.lora.base_model_s3_uri",
                  lambda c, s: c.finetune.lora.base_model_s3_uri or f"{s.base_uri}/{DEFAULT_BASE_MODEL_KEY}",
                  backends=("sagemaker",)),
    ParameterSpec(LORA_STEPS, "Integer", "LoRA training steps (optimizer updates), 1 to 100,000.",
                  "finetune.lora.max_train_steps", lambda c, s: c.finetune.lora.max_train_steps,
                  **_lora_range("max_train_steps"), backends=("sagemaker",)),
    ParameterSpec(LORA_LEARNING_RATE, "Float", "LoRA learning rate (AdamW), 1e-7 to 1e-2.",
                  "finetune.lora.learning_rate", lambda c, s: c.finetune.lora.learning_rate,
                  **_lora_range("learning_rate"), backends=("sagemaker",)),
    ParameterSpec(LORA_RANK, "Integer", "LoRA rank of the UNet attention projections, 1 to 256 (higher learns "
                  "more detail and makes a larger file).",
                  "finetune.lora.lora_rank", lambda c, s: c.finetune.lora.lora_rank,
                  **_lora_range("lora_rank"), backends=("sagemaker",)),
    ParameterSpec(LORA_RESOLUTION, "Integer", "Training image side in px, 64 to 2,048 and a multiple of 8 "
                  "(Stable Diffusion XL: 1024).",
                  "finetune.lora.resolution", lambda c, s: c.finetune.lora.resolution,
                  **_lora_range("resolution"),
                  multiple_of=RESOLUTION_MULTIPLE, backends=("sagemaker",)),
    ParameterSpec(LORA_BATCH_SIZE, "Integer", "Images per training step on the device, 1 to 64.",
                  "finetune.lora.train_batch_size", lambda c, s: c.finetune.lora.train_batch_size,
                  **_lora_range("train_batch_size"), backends=("sagemaker",)),
    ParameterSpec(TRAINING_SEED, "Integer", "Seed of the fine-tune (data order, noise, LoRA initialisation), "
                  "0 to 4,294,967,295.",
                  "finetune.lora.seed", lambda c, s: c.finetune.lora.seed,
                  **_lora_range("seed"), backends=("sagemaker",)),
    ParameterSpec(MIXED_PRECISION, "String", "Mixed precision of the fine-tune: bf16 (GPUs that have it), "
                  "fp16, or no (fp32).",
                  "finetune.lora.mixed_precision", lambda c, s: c.finetune.lora.mixed_precision,
                  enum=("no", "fp16", "bf16"), backends=("sagemaker",)),
    ParameterSpec(TRAINING_INSTANCE_TYPE, "String", "Instance type of the LoRA training job (a GPU instance).",
                  "sagemaker.training_instance_type", lambda c, s: c.sagemaker.training_instance_type,
                  backends=("sagemaker",)),
    ParameterSpec(EVALUATION_INSTANCE_TYPE, "String", "Instance type of Evaluate, which generates images with "
                  "the base and the fine-tuned model (a GPU instance).",
                  "sagemaker.evaluation_instance_type", lambda c, s: c.sagemaker.evaluation_instance_type,
                  backends=("sagemaker",)),
    ParameterSpec(REVIEW_MODE, "String",
                  "a2i: reviewers approve, edit or reject every image and caption in Amazon A2I; auto: an "
                  "automatic policy approves the captioned crops without people.",
                  "review.mode", lambda c, s: c.review.mode, enum=("a2i", "auto")),
    ParameterSpec(MIN_SIMILARITY, "Float",
                  "Quality gate: the fine-tuned model's mean character similarity (generated images vs the "
                  "references) must reach this value to be registered.",
                  "evaluation.min_character_similarity",
                  lambda c, s: c.evaluation.min_character_similarity,
                  minimum=-1.0, maximum=1.0),
    ParameterSpec(MIN_IMPROVEMENT, "Float",
                  "Quality gate: the fine-tuned model's character similarity minus the base model's must reach "
                  "this value (DreamBooth reports differences of about 0.1 as significant to users).",
                  "evaluation.min_improvement",
                  lambda c, s: c.evaluation.min_improvement,
                  minimum=-2.0, maximum=2.0),
    ParameterSpec(MAX_NEAR_COPY_RATE, "Float",
                  "Quality gate: the highest share of the fine-tuned model's images that may be near-copies of a "
                  "training crop (similarity to it at least evaluation.memorisation_threshold), 0 to 1.",
                  "evaluation.max_near_copy_rate",
                  lambda c, s: c.evaluation.max_near_copy_rate,
                  minimum=0.0, maximum=1.0),
    ParameterSpec(MODEL_PACKAGE_GROUP, "String",
                  "Model Registry group that receives the model package (PendingManualApproval).",
                  "registry.model_package_group_name",
                  lambda c, s: model_package_group_name(c.registry, c.project)),
    ParameterSpec(EVALUATION_IMAGES, "String",
                  "Optional folder (S3 prefix, or a path in local runs) of already generated evaluation images; "
                  "empty: Evaluate generates them with the base and the fine-tuned model.",
                  "(none: empty)", lambda c, s: ""),
    ParameterSpec(INSTANCE_TYPE, "String",
                  "Instance type of the processing steps (ExtractFrames, CaptionImages, Evaluate).",
                  "sagemaker.processing_instance_type", lambda c, s: c.sagemaker.processing_instance_type),
    ParameterSpec(INSTANCE_COUNT, "Integer",
                  "Instances of ExtractFrames; the videos are sharded across them by S3 key.",
                  "sagemaker.processing_instance_count", lambda c, s: int(c.sagemaker.processing_instance_count),
                  minimum=1, maximum=100),
)

SPECS_BY_NAME: dict[str, ParameterSpec] = {spec.name: spec for spec in PARAMETER_SPECS}


def specs_for(backend: str) -> tuple[ParameterSpec, ...]:
    """The parameters of a pipeline compiled for ``finetune.backend`` ``backend``, in definition order.

    Raises:
        ValueError: an unknown backend.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown fine-tune backend {backend!r}; one of {BACKENDS}")
    return tuple(spec for spec in PARAMETER_SPECS if backend in spec.backends)


def _config_uri(config: StoryboardConfig, settings: SageMakerSettings) -> str:
    import hashlib

    digest = hashlib.sha256(container_config_bytes(config)).hexdigest()[:16]
    return f"{settings.base_uri}/config/{digest}/pipeline.json"
