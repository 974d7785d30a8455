"""The ``evaluation`` section of ``pipeline.yaml`` (step 5, Evaluate).

Every generation setting is checked against the Nova Canvas ``TEXT_IMAGE`` limits (DESIGN.md §5; Amazon
Nova user guide, "Image generation request and response structure"):

- ``text`` and ``negativeText``: 1 to 1,024 characters;
- ``width`` and ``height``: 320 to 4,096 px, divisible by 16, total pixels below 4,194,304, aspect ratio
  between 1:4 and 4:1;
- ``numberOfImages``: 1 to 5; ``cfgScale``: 1.1 to 10; ``seed``: 0 to 858,993,459;
  ``quality``: ``standard`` or ``premium``.

The default prompt set is the blog's three storyboard scenes for Mayu (AWS Machine Learning blog,
"character-consistent storyboards", part 2, "Test the fine-tuned model") rewritten as templates, so each
configured character gets the same three scenes. Its generation settings (``premium``, 1024 x 1024,
``cfgScale`` 8.0, three images per request, the negative prompt) are the blog's.

The ``diffusers`` sub-section holds the settings of the ``sagemaker`` fine-tune backend's generation
(Stable Diffusion XL base and base+LoRA loaded in the Evaluate job); its limits are diffusers', not Nova
Canvas's (:func:`check_diffusers_size`).
"""

from __future__ import annotations

import string
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from core.config_base import StrictModel

# Nova Canvas TEXT_IMAGE limits (DESIGN.md §5; Amazon Nova user guide, "Image generation request and
# response structure").
NOVA_TEXT_MIN_CHARS = 1
NOVA_TEXT_MAX_CHARS = 1024
NOVA_IMAGE_MIN_SIDE_PX = 320
NOVA_IMAGE_MAX_SIDE_PX = 4096
NOVA_IMAGE_SIDE_MULTIPLE = 16
NOVA_IMAGE_MAX_PIXELS = 4_194_304  # exclusive: width * height must be below this
NOVA_IMAGE_MAX_ASPECT = 4.0
NOVA_MIN_IMAGES = 1
NOVA_MAX_IMAGES = 5
NOVA_MIN_CFG_SCALE = 1.1
NOVA_MAX_CFG_SCALE = 10.0
NOVA_MIN_SEED = 0
NOVA_MAX_SEED = 858_993_459
NOVA_QUALITIES = ("standard", "premium")

NOVA_CANVAS_BASE_MODEL_ID = "amazon.nova-canvas-v1:0"

# Stable Diffusion XL through diffusers (StableDiffusionXLPipeline.check_inputs: height and width divisible by
# 8, the VAE's scale factor). The side range matches the LoRA training resolution (64..2,048 px, the
# training contract); SDXL base 1.0 was trained at 1,024 px. guidance_scale <= 1 turns classifier-free
# guidance off (diffusers: do_classifier_free_guidance is guidance_scale > 1).
DIFFUSERS_MIN_SIDE_PX = 64
DIFFUSERS_MAX_SIDE_PX = 2048
DIFFUSERS_SIDE_MULTIPLE = 8
DIFFUSERS_MIN_STEPS = 1
DIFFUSERS_MAX_STEPS = 200
DIFFUSERS_MIN_GUIDANCE = 0.0
DIFFUSERS_MAX_GUIDANCE = 30.0

# Fields a prompt template may use.
PROMPT_FIELDS = frozenset({"name", "description"})

# The blog's three Mayu scenes, with the character's name as a field and without gendered pronouns.
DEFAULT_PROMPT_TEMPLATES: tuple[str, ...] = (
    "{name}'s face shows a mixture of tension and determination. A companion kneels beside {name} and "
    "holds {name} gently. You can see the scenery in the background.",
    "The face of a steep cliff with a long wooden ladder stretching downwards. In the middle of the ladder "
    "there is {name}, who has a determined expression. {name}'s hands hold tightly on the sides of the "
    "ladder, carefully placing each foot on the rungs. The surrounding environment shows a sturdy, "
    "mountainous landscape.",
    "{name} proudly stands at the entrance to a simple school building, face shining with a big smile, "
    "expressing pride and accomplishment.",
)

DEFAULT_NEGATIVE_PROMPT = "text, ugly, blurry, distorted, low quality, pixelated, watermark, deformed"

Seed = Annotated[int, Field(ge=NOVA_MIN_SEED, le=NOVA_MAX_SEED)]
PromptText = Annotated[str, Field(min_length=NOVA_TEXT_MIN_CHARS, max_length=NOVA_TEXT_MAX_CHARS)]


def template_fields(template: str) -> set[str]:
    """The ``{field}`` names used by a ``str.format`` template.

    Raises:
        ValueError: the template is not a valid format string (an unmatched brace, for example).
    """
    fields: set[str] = set()
    for _, field_name, _, _ in string.Formatter().parse(template):
        if field_name is not None:
            fields.add(field_name)
    return fields


def check_image_size(width: int, height: int) -> None:
    """Check a Nova Canvas output size against the ``TEXT_IMAGE`` limits (DESIGN.md §5).

    Raises:
        ValueError: a side outside 320..4,096 px or not divisible by 16, 4,194,304 pixels or more, or
            an aspect ratio beyond 1:4..4:1; the message names the limit.
    """
    for label, side in (("width", width), ("height", height)):
        if not NOVA_IMAGE_MIN_SIDE_PX <= side <= NOVA_IMAGE_MAX_SIDE_PX:
            raise ValueError(f"{label} {side} px is outside Nova Canvas's {NOVA_IMAGE_MIN_SIDE_PX}.."
                             f"{NOVA_IMAGE_MAX_SIDE_PX} px")
        if side % NOVA_IMAGE_SIDE_MULTIPLE:
            raise ValueError(f"{label} {side} px must be divisible by {NOVA_IMAGE_SIDE_MULTIPLE}")
    if width * height >= NOVA_IMAGE_MAX_PIXELS:
        raise ValueError(f"{width} x {height} = {width * height} pixels; Nova Canvas needs fewer than "
                         f"{NOVA_IMAGE_MAX_PIXELS}")
    aspect = width / height
    if not 1 / NOVA_IMAGE_MAX_ASPECT <= aspect <= NOVA_IMAGE_MAX_ASPECT:
        raise ValueError(f"aspect ratio {width}:{height} is beyond Nova Canvas's 1:4..4:1")


DEFAULT_DIFFUSERS_SIDE_PX = 1024  # Stable Diffusion XL base 1.0's native resolution


def check_diffusers_size(width: int, height: int) -> None:
    """Check a Stable Diffusion XL output size (diffusers): each side 64..2,048 px and divisible by 8.

    Raises:
        ValueError: a side that is not an integer, outside 64..2,048 px or not divisible by 8; the
            message names the side and the limit.
    """
    for label, side in (("width", width), ("height", height)):
        if not isinstance(side, int) or isinstance(side, bool):
            raise ValueError(f"{label} must be an integer number of pixels, got {side!r}")
        if not DIFFUSERS_MIN_SIDE_PX <= side <= DIFFUSERS_MAX_SIDE_PX:
            raise ValueError(f"{label} {side} px is outside {DIFFUSERS_MIN_SIDE_PX}..{DIFFUSERS_MAX_SIDE_PX} px")
        if side % DIFFUSERS_SIDE_MULTIPLE:
            raise ValueError(f"{label} {side} px must be a multiple of {DIFFUSERS_SIDE_MULTIPLE} (the VAE's scale "
                             "factor; StableDiffusionXLPipeline refuses other sizes)")


class DiffusersGenerationConfig(StrictModel):
    """``evaluation.diffusers``: generation settings of the ``sagemaker`` backend (SDXL base and base+LoRA).

    The defaults suit Stable Diffusion XL base 1.0 on a GPU instance (30 steps, guidance 7.5, the diffusers
    defaults for SDXL except the step count). ``width`` and ``height`` default to the resolution the LoRA was
    trained at (``training_config.json`` in the model artifact: 1,024 px for SDXL, 64 px for the offline
    stand-in, a tiny random-weight SDXL-architecture model), else 1,024 px. Prompts, negative prompt, seeds
    and images per prompt come from the ``evaluation`` section itself.
    """

    width: int | None = Field(None, ge=DIFFUSERS_MIN_SIDE_PX, le=DIFFUSERS_MAX_SIDE_PX,
                              description="Image width in px: 64..2,048, a multiple of 8; default: the LoRA's "
                                          "training resolution (SDXL base 1.0: 1,024).")
    height: int | None = Field(None, ge=DIFFUSERS_MIN_SIDE_PX, le=DIFFUSERS_MAX_SIDE_PX,
                               description="Image height in px: 64..2,048, a multiple of 8; default: the LoRA's "
                                           "training resolution.")
    num_inference_steps: int = Field(30, ge=DIFFUSERS_MIN_STEPS, le=DIFFUSERS_MAX_STEPS,
                                     description="Denoising steps per image (1..200).")
    guidance_scale: float = Field(7.5, ge=DIFFUSERS_MIN_GUIDANCE, le=DIFFUSERS_MAX_GUIDANCE,
                                  description="Classifier-free guidance scale (0..30; at most 1 turns guidance "
                                              "off).")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Weights' dtype: auto (float16 on CUDA, float32 on the CPU), float32, float16 or "
                            "bfloat16 (the last two on CUDA only).")

    @model_validator(mode="after")
    def _image_size(self) -> DiffusersGenerationConfig:
        check_diffusers_size(self.width or DEFAULT_DIFFUSERS_SIDE_PX, self.height or DEFAULT_DIFFUSERS_SIDE_PX)
        return self

    def sized(self, resolution: int | None) -> DiffusersGenerationConfig:
        """These settings with the sides left unset filled in: ``resolution`` (the LoRA's training
        resolution, in px) where given, else 1,024 px."""
        side = resolution or DEFAULT_DIFFUSERS_SIDE_PX
        return self.model_copy(update={"width": self.width or side, "height": self.height or side})


class EvaluationConfig(StrictModel):
    """Storyboard prompts, image generation settings and metric settings for the Evaluate step.

    Prompts: ``prompts`` maps a character name to its own prompts; every other character gets
    ``prompt_templates`` rendered with ``{name}`` (the character's caption name) and ``{description}``.
    Each prompt is generated once per seed in ``seeds``, ``images_per_prompt`` images per request.

    Gate (DESIGN.md §7): the Evaluate step passes a fine-tuned model only when every criterion was measured and
    met: character similarity (``metrics.character_similarity.finetuned.mean`` in ``evaluation.json``) at least
    ``min_character_similarity``, improvement over the base model (``metrics.character_similarity.improvement``)
    at least ``min_improvement``, and near-copy rate of the training crops at most ``max_near_copy_rate``; a
    missing figure makes it inconclusive. It writes ``gate.status`` (``passed`` | ``failed`` | ``inconclusive``),
    which is all the Condition step (CheckQuality) reads. Similarity scales
    differ by embedding backend (the local descriptor puts real crops of the right character at about
    0.7 to 0.87 and other characters at about 0.56 to 0.69; see the calibration band in the report), so
    set the threshold for the backend in use.
    """

    base_model_id: str = Field(NOVA_CANVAS_BASE_MODEL_ID, min_length=1,
                               description="Nova Canvas base model ID (the baseline images).")
    custom_model_id: str | None = Field(
        None, min_length=1,
        description="Provisioned throughput ARN of the fine-tuned model (custom Nova Canvas models run only "
                    "on Provisioned Throughput); a pipeline parameter may override it.")
    prompt_templates: list[PromptText] = Field(
        default_factory=lambda: list(DEFAULT_PROMPT_TEMPLATES), min_length=1, max_length=50,
        description="Storyboard prompts with {name} and {description} fields, used for every character "
                    "without its own entry in `prompts`.")
    prompts: dict[str, list[PromptText]] = Field(
        default_factory=dict,
        description="Per-character prompts (character name -> list), replacing the templates for it.")
    seeds: list[Seed] = Field(default_factory=lambda: [1, 7, 42], min_length=1, max_length=20,
                              description="Fixed seeds; every prompt is generated once per seed (0..858,993,459).")
    images_per_prompt: int = Field(3, ge=NOVA_MIN_IMAGES, le=NOVA_MAX_IMAGES,
                                   description="numberOfImages per request (Nova Canvas: 1 to 5).")
    negative_prompt: PromptText = Field(DEFAULT_NEGATIVE_PROMPT,
                                        description="negativeText (Nova Canvas: 1 to 1,024 characters).")
    width: int = Field(1024, ge=NOVA_IMAGE_MIN_SIDE_PX, le=NOVA_IMAGE_MAX_SIDE_PX,
                       description="Image width in px: 320..4,096, divisible by 16.")
    height: int = Field(1024, ge=NOVA_IMAGE_MIN_SIDE_PX, le=NOVA_IMAGE_MAX_SIDE_PX,
                        description="Image height in px: 320..4,096, divisible by 16.")
    cfg_scale: float = Field(8.0, ge=NOVA_MIN_CFG_SCALE, le=NOVA_MAX_CFG_SCALE,
                             description="cfgScale (Nova Canvas: 1.1 to 10; the blog uses 8.0).")
    quality: Literal["standard", "premium"] = Field("premium", description="Nova Canvas quality.")
    concurrency: int = Field(2, ge=1, le=16, description="Parallel InvokeModel requests.")
    max_attempts: int = Field(6, ge=1, le=20,
                              description="Attempts per InvokeModel request in all, retries by botocore's adaptive "
                                          "mode on throttling or a transient service error included.")
    bootstrap_samples: int = Field(2000, ge=100, le=100_000,
                                   description="Bootstrap resamples for the confidence intervals.")
    confidence_level: float = Field(0.95, ge=0.5, le=0.999, description="Confidence level of the intervals.")
    random_seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of the bootstrap's random generator.")
    memorisation_threshold: float = Field(
        0.95, gt=0.0, le=1.0,
        description="Cosine similarity to a training crop at or above which a generated image counts as "
                    "a near-copy (de-duplication anchors: 0.9 to 0.95, DESIGN §9).")
    min_character_similarity: float = Field(
        0.7, ge=-1.0, le=1.0,
        description="Gate: lowest acceptable fine-tuned character similarity (cosine; backend-dependent).")
    min_improvement: float = Field(
        0.02, ge=-2.0, le=2.0,
        description="Gate: lowest acceptable fine-tuned minus base character similarity (DreamBooth reports "
                    "DINO differences of about 0.1 as significant to users).")
    max_near_copy_rate: float = Field(
        0.2, ge=0.0, le=1.0,
        description="Gate: highest acceptable share of fine-tuned images that are near-copies of a training crop "
                    "(similarity at or above memorisation_threshold); needs the training crops, else the gate is "
                    "inconclusive.")
    min_calibration_auc: float = Field(
        0.9, ge=0.5, le=1.0,
        description="Gate: lowest acceptable one-vs-rest ROC AUC of the encoder on each run's own held-out real crops "
                    "(each character against the other characters and background windows; evaluation.calibration). "
                    "Below it, or not measured, the gate is inconclusive: the encoder cannot tell the characters apart "
                    "(use Titan, Nova Multimodal Embeddings or an ONNX encoder).")
    min_images_per_character: int = Field(
        8, ge=2, le=10_000,
        description="Images per character below which a character's bootstrap intervals are flagged (few_images): "
                    "a percentile interval over a handful of images has only a few possible means.")
    thumbnail_px: int = Field(256, ge=64, le=1024, description="Longer side of the report's image thumbnails.")
    max_images_per_character_in_report: int = Field(
        12, ge=1, le=200, description="Image pairs shown per character in report.html (all are scored).")
    diffusers: DiffusersGenerationConfig = Field(
        default_factory=DiffusersGenerationConfig,
        description="Generation settings of the sagemaker fine-tune backend (SDXL base and base+LoRA in the "
                    "Evaluate job); the Nova Canvas settings above do not apply to it.")

    @field_validator("prompt_templates")
    @classmethod
    def _known_fields(cls, value: list[str]) -> list[str]:
        for template in value:
            try:
                fields = template_fields(template)
            except ValueError as err:
                raise ValueError(f"prompt template {template[:60]!r}... is not a valid format string: {err}") \
                    from None
            unknown = fields - PROMPT_FIELDS
            if unknown:
                raise ValueError(f"prompt template uses unknown field(s) {sorted(unknown)}; "
                                 f"allowed: {sorted(PROMPT_FIELDS)}")
        return value

    @field_validator("prompts")
    @classmethod
    def _prompt_lists(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, prompts in value.items():
            if not prompts:
                raise ValueError(f"prompts for {name!r} is empty; remove the key to use prompt_templates")
            if len(prompts) > 50:
                raise ValueError(f"prompts for {name!r} has {len(prompts)} entries; at most 50")
        return value

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"seeds must be unique, got {value}")
        return value

    @model_validator(mode="after")
    def _image_size(self) -> EvaluationConfig:
        check_image_size(self.width, self.height)
        return self
