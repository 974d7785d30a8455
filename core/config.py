"""``pipeline.yaml``: the project's configuration, validated with pydantic.

One file configures every step: the characters and their reference images, frame sampling, character
detection, crops, embeddings, de-duplication, captions, and the later steps (review, fine-tune,
evaluation, registry, the SageMaker pipeline itself). Unknown keys, wrong types and impossible values
are rejected by :func:`load_config` with a message that names the dotted key and the allowed range.

Limits quoted here come from ``DESIGN.md`` §5 (Nova Canvas fine-tuning dataset limits, Amazon Nova
user guide "Preparing data for fine-tuning image generation"; Titan Multimodal Embeddings G1 request
shape, Bedrock user guide).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from core.config_base import StrictModel
from core.evaluation_config import EvaluationConfig
from core.mlops_config import FineTuneConfig, RegistryConfig, ReviewConfig
from core.sagemaker_config import SageMakerConfig

# Nova Canvas fine-tuning dataset limits (Amazon Nova user guide, "Preparing data for fine-tuning
# image generation"; DESIGN.md §5).
NOVA_CANVAS_MIN_SIDE_PX = 512
NOVA_CANVAS_MAX_SIDE_PX = 4096
NOVA_CANVAS_MAX_PIXELS = 12_582_912
NOVA_CANVAS_MAX_ASPECT = 4.0
NOVA_CANVAS_CAPTION_MIN_CHARS = 3
NOVA_CANVAS_CAPTION_MAX_CHARS = 1024
NOVA_CANVAS_MIN_RECORDS = 5
NOVA_CANVAS_MAX_RECORDS = 10_000
NOVA_CANVAS_MAX_IMAGE_BYTES = 50 * 1024 * 1024

CHARACTER_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"

# Bedrock model defaults (Nova 2 Lite: generally available, multimodal input; Nova Multimodal Embeddings:
# offered in us-east-1, Nova user guide "Using Nova Embeddings").
NOVA_CAPTIONS_MODEL_ID = "us.amazon.nova-2-lite-v1:0"
NOVA_EMBEDDINGS_MODEL_ID = "amazon.nova-2-multimodal-embeddings-v1:0"
NOVA_EMBEDDINGS_REGIONS = ("us-east-1",)

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class ReferenceFrame(StrictModel):
    """A reference given as a region of a video frame instead of an image file.

    ``video`` may be omitted: the reference is then cut from the first input video (``--video``).
    Exactly one of ``timestamp_s`` and ``frame_index`` selects the frame; ``bbox`` is ``[x, y, w, h]``
    in source-frame pixels (before letterbox removal).
    """

    video: str | None = Field(None, description="Video file; default: the first input video.")
    timestamp_s: float | None = Field(None, ge=0.0, description="Frame time in seconds.")
    frame_index: int | None = Field(None, ge=0, description="Frame index (0-based, decode order).")
    bbox: tuple[int, int, int, int] = Field(..., description="[x, y, w, h] in source pixels.")

    @model_validator(mode="after")
    def _one_frame_selector(self) -> ReferenceFrame:
        if (self.timestamp_s is None) == (self.frame_index is None):
            raise ValueError("give exactly one of timestamp_s and frame_index")
        x, y, w, h = self.bbox
        if x < 0 or y < 0 or w < 16 or h < 16:
            raise ValueError(f"bbox {list(self.bbox)} must have x, y >= 0 and w, h >= 16 pixels")
        return self


class CharacterConfig(StrictModel):
    """One character: its name (used in captions and file names), a short description, references.

    ``references`` lists image files and video-frame regions; where it is empty, the images of the
    ``--characters DIR/<name>/`` folder are used (and its ``references.yaml``, if any).
    """

    name: str = Field(..., pattern=CHARACTER_NAME_PATTERN,
                      description="Lower-case letters, digits, '_' or '-' (at most 63 characters).")
    display_name: str | None = Field(None, min_length=1, max_length=64,
                                     description="Name written in captions; default: name.")
    description: str = Field("", max_length=300, description="Short visual description.")
    references: list[str | ReferenceFrame] = Field(default_factory=list)

    @property
    def caption_name(self) -> str:
        """The name captions use: ``display_name`` or ``name`` with the first letter upper-cased."""
        return self.display_name or self.name[:1].upper() + self.name[1:]


class SamplingConfig(StrictModel):
    """Frame sampling (DESIGN §8 for the measured speeds of each mode)."""

    mode: Literal["interval", "keyframes", "shots"] = Field(
        "interval", description="interval: one frame every `every_s`; keyframes: I-frames only; "
                                "shots: one frame per shot plus interval frames inside long shots.")
    every_s: float = Field(1.0, gt=0.0, le=3600.0, description="Seconds between sampled frames.")
    shot_threshold: float = Field(0.25, gt=0.0, le=1.0,
                                  description="Hellinger distance of colour histograms of consecutive decoded "
                                              "frames that marks a cut (0..1).")
    max_frames: int | None = Field(None, ge=1, description="Stop after this many sampled frames.")
    remove_letterbox: bool = Field(True, description="Detect and remove black bars.")
    letterbox_max_luma: int = Field(24, ge=0, le=128, description="Rows/columns darker than this are bars.")
    threads: int = Field(0, ge=0, le=64, description="Decoder threads; 0 lets FFmpeg choose.")


class DetectionConfig(StrictModel):
    """Character detection: find each character's bounding box in a sampled frame.

    The local backend (:mod:`steps.local_detector`) slides windows over each frame and scores them with
    a classifier over the film's background and every character, trained at run time; see its module docstring
    for the method.
    """

    backend: Literal["local", "rekognition"] = "local"
    min_score: Probability = Field(0.5, description="Detections whose (temporally smoothed) score is "
                                                              "below this are dropped.")
    window_scales: list[Annotated[float, Field(gt=0.05, le=1.0)]] = Field(
        default_factory=lambda: [0.3, 0.45, 0.65, 0.9, 1.0], min_length=1,
        description="Sliding-window heights as a fraction of the content's shorter side (local backend).")
    window_aspects: list[Annotated[float, Field(ge=0.25, le=4.0)]] = Field(
        default_factory=lambda: [1.0, 0.75, 0.5, 1.5], min_length=1,
        description="Sliding-window width / height ratios (local backend).")
    window_stride: float = Field(0.25, gt=0.05, le=1.0, description="Stride as a fraction of the window.")
    nms_iou: Probability = Field(0.3, description="IoU above which overlapping boxes are suppressed.")
    temporal_window: int = Field(3, ge=1, le=15, description="Sampled frames of one shot whose median score "
                                                             "rescores a detection (odd; 1 disables).")
    max_per_frame: int = Field(1, ge=1, le=20, description="Most detections per character per frame.")
    identity_margin: float = Field(0.1, ge=0.0, le=1.0,
                                   description="A window goes to a character only when the classifier's "
                                               "probability for it beats every other character's on the same window "
                                               "by this much (local backend).")
    min_colour_similarity: Probability = Field(
        0.65, description="Bhattacharyya coefficient between a detection's colours and its references' foreground, "
                          "both restricted to the character's colours, below which it is dropped (local backend).")
    focus_weight: float = Field(0.25, ge=0.0, le=4.0,
                                description="Exponent of the focus factor that lowers out-of-focus windows' scores "
                                            "(local backend; 0 disables).")
    mining_frames: int = Field(150, ge=5, le=5000,
                               description="Frames spread over the videos from which background windows are "
                                           "mined as negatives (local backend).")
    negatives_per_frame: int = Field(100, ge=5, le=2000,
                                     description="Background windows mined from each mining frame (local backend).")
    augmentations_per_reference: int = Field(40, ge=2, le=500,
                                             description="Augmented copies of each reference (local backend).")
    copy_paste: int = Field(120, ge=0, le=5000,
                            description="Positives made by pasting each character's foreground onto background "
                                        "windows of the video (local backend; 0 disables).")
    seed: int = Field(0, ge=0, description="Random seed of GrabCut, augmentation and mining (local backend).")
    feature_model: str = Field(
        "auto", min_length=1,
        description="Pretrained backbone that widens boxes to parts of a character that colour misses (local "
                    "backend; core/feature_backbone.py): auto (models/mobilenetv3-centernet or "
                    "$STORYBOARD_MODEL_DIR when fetched by `make feature-model`, else none with a warning), none, "
                    "or a folder holding centernet.json and centernet.bin.")
    rekognition_min_confidence: float = Field(50.0, ge=0.0, le=100.0,
                                              description="DetectLabels MinConfidence (percent).")

    @field_validator("temporal_window")
    @classmethod
    def _odd_window(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"temporal_window must be odd (1, 3, 5, ...), got {value}")
        return value
    rekognition_labels: list[str] = Field(
        default_factory=lambda: ["Person", "Animal", "Mammal", "Cartoon", "Toy", "Face", "Rabbit", "Bird"],
        description="DetectLabels names whose instance boxes are candidate characters.")
    identity_threshold: Probability = Field(0.6, description="Minimum cosine similarity of a candidate box "
                                                             "to a character's references (rekognition).")


class CropConfig(StrictModel):
    """Crops around detections, size policy and quality filters."""

    aspect_ratio: float = Field(1.0, ge=1 / NOVA_CANVAS_MAX_ASPECT, le=NOVA_CANVAS_MAX_ASPECT,
                                description="Width / height of every crop (Nova Canvas: 1:4 to 4:1).")
    padding: float = Field(0.15, ge=0.0, le=2.0, description="Padding added to each side, as a fraction "
                                                             "of the box size.")
    min_side_px: int = Field(NOVA_CANVAS_MIN_SIDE_PX, ge=NOVA_CANVAS_MIN_SIDE_PX, le=NOVA_CANVAS_MAX_SIDE_PX,
                             description="Shorter side of a training image (Nova Canvas minimum: 512).")
    max_upscale: float = Field(2.0, ge=1.0, le=8.0,
                               description="Largest upscale factor for crops below min_side_px; "
                                           "smaller crops are dropped.")
    max_side_px: int = Field(2048, ge=NOVA_CANVAS_MIN_SIDE_PX, le=NOVA_CANVAS_MAX_SIDE_PX,
                             description="Larger crops are downscaled to this longer side.")
    min_blur_variance: float = Field(20.0, ge=0.0, description="Variance of the Laplacian below which a "
                                                               "crop is too blurred (Pech-Pacheco 2000).")
    min_mean_luma: float = Field(35.0, ge=0.0, le=255.0, description="Mean luma below which a crop is too dark.")
    max_mean_luma: float = Field(235.0, ge=0.0, le=255.0, description="Mean luma above which it is too bright.")
    image_format: Literal["jpeg", "png"] = "jpeg"
    jpeg_quality: int = Field(95, ge=50, le=100)

    @model_validator(mode="after")
    def _luma_order(self) -> CropConfig:
        if self.min_mean_luma >= self.max_mean_luma:
            raise ValueError(f"min_mean_luma ({self.min_mean_luma}) must be below max_mean_luma "
                             f"({self.max_mean_luma})")
        return self


class EmbeddingConfig(StrictModel):
    """Image embeddings for de-duplication, identity and evaluation.

    Backends: ``local`` (offline descriptor), ``titan`` (Titan Multimodal Embeddings G1), ``nova`` (Amazon
    Nova Multimodal Embeddings, ``amazon.nova-2-multimodal-embeddings-v1:0``, us-east-1; dimensions 256,
    384, 1,024 or 3,072 per the Nova user guide, "Complete embeddings request and response schema"),
    ``onnx`` (a user-supplied encoder).
    """

    backend: Literal["local", "titan", "nova", "onnx"] = "local"
    titan_model_id: str = Field("amazon.titan-embed-image-v1", min_length=1)
    titan_output_length: Literal[256, 384, 1024] = Field(
        1024, description="Titan Multimodal Embeddings G1 outputEmbeddingLength.")
    nova_model_id: str = Field(NOVA_EMBEDDINGS_MODEL_ID, min_length=1,
                               description="Nova Multimodal Embeddings model ID (backend=nova).")
    nova_dimension: Literal[256, 384, 1024, 3072] = Field(
        1024, description="Nova Multimodal Embeddings embeddingDimension (backend=nova).")
    nova_embedding_purpose: Literal["GENERIC_INDEX", "CLASSIFICATION", "CLUSTERING"] = Field(
        "GENERIC_INDEX", description="Nova embeddingPurpose for images compared with images (backend=nova).")
    onnx_model_path: str | None = Field(None, description="ONNX image encoder (backend=onnx).")
    onnx_input_size: int = Field(224, ge=32, le=1024, description="Square input side of the ONNX encoder.")
    concurrency: int = Field(4, ge=1, le=64, description="Parallel embedding requests (titan).")

    @model_validator(mode="after")
    def _onnx_needs_path(self) -> EmbeddingConfig:
        if self.backend == "onnx" and not self.onnx_model_path:
            raise ValueError("backend 'onnx' needs onnx_model_path (a .onnx image encoder)")
        return self


class DedupConfig(StrictModel):
    """Near-duplicate removal by cosine similarity of embeddings (DESIGN §9 for the anchors)."""

    threshold: float = Field(0.92, gt=0.0, le=1.0, description="Crops of one character with cosine "
                                                               "similarity at or above this are duplicates.")
    block_size: int = Field(2048, ge=64, le=65536, description="Rows per block of the similarity matrix.")


class CaptionConfig(StrictModel):
    """Captions: template (offline default) or an Amazon Nova model through the Converse API.

    ``backend: nova`` (``nova-pro`` is the same backend under its former name) sends each crop to
    ``model_id``: by default Nova 2 Lite through its US cross-Region inference profile
    (``us.amazon.nova-2-lite-v1:0``); Nova Pro v1 stays an option (``us.amazon.nova-pro-v1:0``).
    """

    backend: Literal["template", "nova", "nova-pro"] = "template"
    model_id: str = Field(NOVA_CAPTIONS_MODEL_ID, min_length=1,
                          description="Inference profile ID; the bare model ID is rejected on demand.")
    template: str = Field("{names}, {scene}", min_length=3,
                          description="Template caption; fields: {names}, {scene}, {description}.")
    min_chars: int = Field(NOVA_CANVAS_CAPTION_MIN_CHARS, ge=NOVA_CANVAS_CAPTION_MIN_CHARS,
                           le=NOVA_CANVAS_CAPTION_MAX_CHARS)
    max_chars: int = Field(NOVA_CANVAS_CAPTION_MAX_CHARS, ge=NOVA_CANVAS_CAPTION_MIN_CHARS,
                           le=NOVA_CANVAS_CAPTION_MAX_CHARS,
                           description="Longest caption (Nova Canvas accepts 3 to 1,024 characters).")
    concurrency: int = Field(4, ge=1, le=64, description="Parallel Converse requests.")
    max_attempts: int = Field(3, ge=1, le=10, description="Attempts for an answer that does not parse or "
                                                          "names no character.")
    temperature: float = Field(0.3, ge=0.0, le=1.0)
    max_tokens: int = Field(300, ge=32, le=5000)

    @model_validator(mode="after")
    def _length_order(self) -> CaptionConfig:
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) must not exceed max_chars ({self.max_chars})")
        return self


class AwsConfig(StrictModel):
    """Region and credentials profile; Nova Canvas fine-tuning is offered in us-east-1 only."""

    region: str = Field("us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    profile: str | None = None
    read_timeout_s: int = Field(300, ge=30, le=3600,
                                description="botocore read timeout; Nova Canvas needs at least 300 s.")
    max_attempts: int = Field(8, ge=1, le=20, description="botocore adaptive retry attempts.")


class StoryboardConfig(StrictModel):
    """The whole of ``pipeline.yaml``."""

    project: str = Field("storyboard", pattern=r"^[a-z0-9][a-z0-9-]{0,39}$",
                         description="Prefix of AWS resource names.")
    characters: list[CharacterConfig] = Field(default_factory=list)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    detection: DetectionConfig = Field(default_factory=DetectionConfig)
    crops: CropConfig = Field(default_factory=CropConfig)
    embeddings: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    captions: CaptionConfig = Field(default_factory=CaptionConfig)
    aws: AwsConfig = Field(default_factory=AwsConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    finetune: FineTuneConfig = Field(default_factory=FineTuneConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    sagemaker: SageMakerConfig = Field(default_factory=SageMakerConfig)

    @model_validator(mode="after")
    def _nova_embeddings_region(self) -> StoryboardConfig:
        if self.embeddings.backend == "nova" and self.aws.region not in NOVA_EMBEDDINGS_REGIONS:
            raise ValueError(f"embeddings.backend nova (Nova Multimodal Embeddings) is offered in "
                             f"{', '.join(NOVA_EMBEDDINGS_REGIONS)} only; set aws.region: us-east-1, or another "
                             f"embeddings.backend (aws.region is {self.aws.region})")
        return self

    @field_validator("characters")
    @classmethod
    def _unique_names(cls, value: list[CharacterConfig]) -> list[CharacterConfig]:
        names = [c.name for c in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"character names must be unique; repeated: {dupes}")
        return value

    def character(self, name: str) -> CharacterConfig:
        """Return the character called ``name``, or a default one (no description) if not configured."""
        for c in self.characters:
            if c.name == name:
                return c
        return CharacterConfig(name=name)


class ConfigError(ValueError):
    """``pipeline.yaml`` is missing, not YAML, or violates the schema; the message names each key."""


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: {err.error_count()} invalid setting(s):"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        ctx = e.get("ctx") or {}
        bounds = ", ".join(f"{k} {ctx[k]}" for k in ("ge", "gt", "le", "lt") if k in ctx)
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling against pipeline.yaml's documented keys)"
        elif bounds:
            msg = f"{msg} (allowed: {bounds})"
        got = e.get("input")
        got_s = "" if isinstance(got, dict) else f"; got {got!r}"
        lines.append(f"  - {key}: {msg}{got_s}")
    return "\n".join(lines)


def parse_config(data: dict | None, source: str = "pipeline.yaml") -> StoryboardConfig:
    """Validate a configuration mapping (``None`` means all defaults).

    Raises:
        ConfigError: with one line per invalid key: dotted path, the problem and the allowed range.
    """
    try:
        return StoryboardConfig.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | Path | None = None) -> StoryboardConfig:
    """Load and validate ``pipeline.yaml`` (``None``: the defaults, no characters).

    Relative reference paths in ``characters[].references`` are resolved against the file's folder.

    Raises:
        ConfigError: the file is missing, is not a YAML mapping, or fails validation.
    """
    if path is None:
        return parse_config({})
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"configuration file {path} does not exist; pass --config with a pipeline.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path} must be a YAML mapping of sections, got {type(data).__name__}")
    config = parse_config(data, source=str(path))
    base = path.resolve().parent
    for character in config.characters:
        resolved: list[str | ReferenceFrame] = []
        for ref in character.references:
            if isinstance(ref, str):
                resolved.append(str((base / ref).resolve()) if not re.match(r"^[a-z0-9]+://", ref) else ref)
            else:
                if ref.video and not Path(ref.video).is_absolute():
                    ref = ref.model_copy(update={"video": str((base / ref.video).resolve())})
                resolved.append(ref)
        character.references = resolved
    return config


DEFAULT_CONFIG_FILE = "pipeline.yaml"


def load_config_or_default(path: str | Path | None = None) -> StoryboardConfig:
    """The configuration every command uses: ``path`` if given, else ``./pipeline.yaml`` when the working
    folder has one, else the built-in defaults (the same values: the repository's ``pipeline.yaml`` is
    generated from them).

    Raises:
        ConfigError: as :func:`load_config`.
    """
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = Path(DEFAULT_CONFIG_FILE)
    return load_config(path)
