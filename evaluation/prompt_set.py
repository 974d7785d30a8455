"""The prompt set: one validated request per (character, prompt, seed), and the names of its images.

:func:`build_requests` turns the ``evaluation`` section of ``pipeline.yaml`` into one
:class:`TextImageRequest` per (character, prompt, seed), each validated before anything is sent: against the
``TEXT_IMAGE`` limits (:func:`validate_text_image_body`) for Nova Canvas, or against diffusers' limits
(:func:`validate_diffusers_request`, settings from ``evaluation.diffusers``) for ``backend="diffusers"``.
A request's images are named ``<character>_p<k>_s<seed>_<i>.png`` (:func:`image_file_name`,
:func:`parse_image_name`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from core.errors import InputError
from core.evaluation_config import (
    DIFFUSERS_MAX_GUIDANCE,
    DIFFUSERS_MAX_STEPS,
    DIFFUSERS_MIN_GUIDANCE,
    DIFFUSERS_MIN_STEPS,
    NOVA_MAX_CFG_SCALE,
    NOVA_MAX_IMAGES,
    NOVA_MAX_SEED,
    NOVA_MIN_CFG_SCALE,
    NOVA_MIN_IMAGES,
    NOVA_MIN_SEED,
    NOVA_QUALITIES,
    NOVA_TEXT_MAX_CHARS,
    NOVA_TEXT_MIN_CHARS,
    EvaluationConfig,
    check_diffusers_size,
    check_image_size,
)

if TYPE_CHECKING:
    from core.config import CharacterConfig

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# <character>_p<k>_s<seed>_<i>.png: prompt index k, seed, image index i (all 0-based integers).
IMAGE_NAME_PATTERN = re.compile(r"^(?P<character>[a-z0-9][a-z0-9_-]*)_p(?P<prompt>\d+)_s(?P<seed>\d+)_(?P<index>\d+)"
                                r"\.(?:png|jpe?g|webp)$")

Limits = Literal["nova-canvas", "diffusers"]
MAX_TORCH_SEED = 2**64 - 1  # torch.Generator.manual_seed accepts 0..2**64-1


class RequestValidationError(InputError):
    """A request breaks its backend's limits (Nova Canvas ``TEXT_IMAGE`` or diffusers); raised before it is
    sent."""


def image_file_name(character: str, prompt_index: int, seed: int, index: int) -> str:
    """Deterministic image name ``<character>_p<k>_s<seed>_<i>.png`` (all indices 0-based)."""
    return f"{character}_p{prompt_index}_s{seed}_{index}.png"


def parse_image_name(name: str) -> dict[str, Any] | None:
    """Split a name made by :func:`image_file_name` into ``character``, ``prompt_index``, ``seed``,
    ``index``; ``None`` for any other name."""
    match = IMAGE_NAME_PATTERN.match(name)
    if not match:
        return None
    return {"character": match["character"], "prompt_index": int(match["prompt"]), "seed": int(match["seed"]),
            "index": int(match["index"])}


def validate_text_image_body(body: dict[str, Any]) -> None:
    """Check a complete Nova Canvas ``TEXT_IMAGE`` request body against the limits of DESIGN.md §5.

    Limits (Amazon Nova user guide, "Image generation request and response structure"): ``text`` and
    ``negativeText`` 1..1,024 characters; ``width``/``height`` 320..4,096 px, divisible by 16, fewer than
    4,194,304 pixels, aspect 1:4..4:1; ``numberOfImages`` 1..5; ``cfgScale`` 1.1..10; ``seed``
    0..858,993,459; ``quality`` ``standard`` or ``premium``.

    Raises:
        RequestValidationError: the first broken limit, naming the field.
    """
    def fail(message: str) -> None:
        raise RequestValidationError(f"Nova Canvas TEXT_IMAGE request: {message}")

    if body.get("taskType") != "TEXT_IMAGE":
        fail(f"taskType must be 'TEXT_IMAGE', got {body.get('taskType')!r}")
    extra = set(body) - {"taskType", "textToImageParams", "imageGenerationConfig"}
    if extra:
        fail(f"unknown top-level keys {sorted(extra)}")
    params = body.get("textToImageParams")
    if not isinstance(params, dict):
        fail("textToImageParams must be an object")
    for key in ("text", "negativeText"):
        if key not in params:
            if key == "text":
                fail("textToImageParams.text is required")
            continue
        value = params[key]
        if not isinstance(value, str) or not NOVA_TEXT_MIN_CHARS <= len(value) <= NOVA_TEXT_MAX_CHARS:
            length = len(value) if isinstance(value, str) else type(value).__name__
            fail(f"textToImageParams.{key} must be {NOVA_TEXT_MIN_CHARS}..{NOVA_TEXT_MAX_CHARS} characters, "
                 f"got {length}")
    extra = set(params) - {"text", "negativeText", "style"}
    if extra:
        fail(f"unknown textToImageParams keys {sorted(extra)}")
    cfg = body.get("imageGenerationConfig")
    if not isinstance(cfg, dict):
        fail("imageGenerationConfig must be an object")
    extra = set(cfg) - {"numberOfImages", "width", "height", "cfgScale", "seed", "quality"}
    if extra:
        fail(f"unknown imageGenerationConfig keys {sorted(extra)}")
    for key in ("numberOfImages", "width", "height", "seed"):
        if key in cfg and (not isinstance(cfg[key], int) or isinstance(cfg[key], bool)):
            fail(f"imageGenerationConfig.{key} must be an integer, got {cfg[key]!r}")
    n = cfg.get("numberOfImages", 1)
    if not NOVA_MIN_IMAGES <= n <= NOVA_MAX_IMAGES:
        fail(f"numberOfImages must be {NOVA_MIN_IMAGES}..{NOVA_MAX_IMAGES}, got {n}")
    width, height = cfg.get("width", 1024), cfg.get("height", 1024)
    try:
        check_image_size(width, height)
    except ValueError as err:
        fail(str(err))
    if "cfgScale" in cfg:
        scale = cfg["cfgScale"]
        if not isinstance(scale, (int, float)) or not NOVA_MIN_CFG_SCALE <= scale <= NOVA_MAX_CFG_SCALE:
            fail(f"cfgScale must be {NOVA_MIN_CFG_SCALE}..{NOVA_MAX_CFG_SCALE}, got {scale!r}")
    if "seed" in cfg and not NOVA_MIN_SEED <= cfg["seed"] <= NOVA_MAX_SEED:
        fail(f"seed must be {NOVA_MIN_SEED}..{NOVA_MAX_SEED}, got {cfg['seed']}")
    if "quality" in cfg and cfg["quality"] not in NOVA_QUALITIES:
        fail(f"quality must be one of {NOVA_QUALITIES}, got {cfg['quality']!r}")


def validate_diffusers_request(request: TextImageRequest) -> None:
    """Check a request for the diffusers backend (Stable Diffusion XL) against its limits.

    Limits (``core.evaluation_config``): a non-empty prompt; ``width``/``height`` 64..2,048 px, multiples of 8
    (``StableDiffusionXLPipeline.check_inputs``); ``num_inference_steps`` 1..200; ``cfg_scale`` (the
    guidance scale) 0..30; ``number_of_images`` at least 1; image ``i`` is seeded with ``seed + i``, which must
    stay within 0..2**64-1 (``torch.Generator.manual_seed``). Prompts longer than the CLIP tokenizers' 77
    tokens are truncated by diffusers (it logs a warning); that is not an error.

    Raises:
        RequestValidationError: the first broken limit, naming the field.
    """
    def fail(message: str) -> None:
        raise RequestValidationError(f"diffusers request ({request.character} prompt {request.prompt_index} seed "
                                     f"{request.seed}): {message}")

    if request.limits != "diffusers":
        fail(f"limits must be 'diffusers', got {request.limits!r}")
    if not isinstance(request.prompt, str) or not request.prompt.strip():
        fail("prompt must be a non-empty string")
    if request.negative_prompt is not None and not isinstance(request.negative_prompt, str):
        fail(f"negative_prompt must be a string or None, got {type(request.negative_prompt).__name__}")
    try:
        check_diffusers_size(request.width, request.height)
    except ValueError as err:
        fail(str(err))
    steps = request.num_inference_steps
    if not isinstance(steps, int) or isinstance(steps, bool) or not DIFFUSERS_MIN_STEPS <= steps <= DIFFUSERS_MAX_STEPS:
        fail(f"num_inference_steps must be {DIFFUSERS_MIN_STEPS}..{DIFFUSERS_MAX_STEPS}, got {steps!r}")
    if not isinstance(request.cfg_scale, (int, float)) or \
            not DIFFUSERS_MIN_GUIDANCE <= request.cfg_scale <= DIFFUSERS_MAX_GUIDANCE:
        fail(f"guidance scale must be {DIFFUSERS_MIN_GUIDANCE}..{DIFFUSERS_MAX_GUIDANCE}, got {request.cfg_scale!r}")
    if not isinstance(request.number_of_images, int) or request.number_of_images < 1:
        fail(f"number_of_images must be at least 1, got {request.number_of_images!r}")
    if not isinstance(request.seed, int) or not 0 <= request.seed <= MAX_TORCH_SEED - request.number_of_images + 1:
        fail(f"seed must be 0..{MAX_TORCH_SEED - request.number_of_images + 1}, got {request.seed!r}")


@dataclass(frozen=True)
class TextImageRequest:
    """One request of the prompt set: a Nova Canvas ``TEXT_IMAGE`` request, or a diffusers generation.

    Attributes:
        character: the character the prompt names (the folder the images go to).
        prompt_index: 0-based index k of the prompt among the character's prompts.
        prompt: ``textToImageParams.text`` (1..1,024 characters).
        seed: 0..858,993,459; number_of_images: 1..5.
        negative_prompt: ``negativeText`` (1..1,024 characters) or ``None``.
        width, height: output size in px; cfg_scale: 1.1..10 (Nova Canvas) or the diffusers guidance scale
            (0..30); quality: ``standard`` or ``premium`` (Nova Canvas; ``None`` for diffusers).
        ordinal: position in the prompt set (the folder generator uses it to pick images).
        num_inference_steps: denoising steps (diffusers only; ``None`` for Nova Canvas).
        limits: the limits the request is validated against: ``nova-canvas`` (:func:`validate_text_image_body`)
            or ``diffusers`` (:func:`validate_diffusers_request`).
    """

    character: str
    prompt_index: int
    prompt: str
    seed: int
    number_of_images: int = 3
    negative_prompt: str | None = None
    width: int = 1024
    height: int = 1024
    cfg_scale: float = 8.0
    quality: str | None = "premium"
    ordinal: int = 0
    num_inference_steps: int | None = None
    limits: Limits = "nova-canvas"

    def validate(self) -> None:
        """Check the request against its backend's limits (see ``limits``).

        Raises:
            RequestValidationError: a limit is broken.
        """
        if self.limits == "diffusers":
            validate_diffusers_request(self)
        else:
            self.body()

    def body(self) -> dict[str, Any]:
        """The Nova Canvas ``InvokeModel`` body as a dict, validated (:func:`validate_text_image_body`).

        Raises:
            RequestValidationError: a limit is broken, or the request is a diffusers request.
        """
        if self.limits != "nova-canvas":
            raise RequestValidationError(f"a {self.limits} request has no Nova Canvas TEXT_IMAGE body; give it to "
                                         "the diffusers generator")
        params: dict[str, Any] = {"text": self.prompt}
        if self.negative_prompt:
            params["negativeText"] = self.negative_prompt
        body = {
            "taskType": "TEXT_IMAGE",
            "textToImageParams": params,
            "imageGenerationConfig": {
                "numberOfImages": self.number_of_images,
                "width": self.width,
                "height": self.height,
                "cfgScale": self.cfg_scale,
                "seed": self.seed,
                "quality": self.quality,
            },
        }
        validate_text_image_body(body)
        return body

    def file_names(self) -> list[str]:
        """The file names of this request's images, ``<character>_p<k>_s<seed>_<i>.png``."""
        return [image_file_name(self.character, self.prompt_index, self.seed, i)
                for i in range(self.number_of_images)]

    def to_json(self) -> dict[str, Any]:
        """The request's fields for the generation log (diffusers requests add ``num_inference_steps``)."""
        out = {"character": self.character, "prompt_index": self.prompt_index, "prompt": self.prompt,
               "negative_prompt": self.negative_prompt, "seed": self.seed,
               "number_of_images": self.number_of_images, "width": self.width, "height": self.height,
               "cfg_scale": self.cfg_scale, "quality": self.quality}
        if self.limits == "diffusers":
            out["num_inference_steps"] = self.num_inference_steps
        return out


def _character_entries(characters: Sequence[CharacterConfig | str]) -> list[CharacterConfig]:
    from core.config import CharacterConfig

    return [c if isinstance(c, CharacterConfig) else CharacterConfig(name=c) for c in characters]


def character_prompts(config: EvaluationConfig, character: CharacterConfig | str) -> list[str]:
    """The prompts of one character: ``config.prompts[name]`` or the templates rendered with ``{name}``
    (caption name) and ``{description}``.

    Raises:
        InputError: a rendered prompt is longer than 1,024 characters (Nova Canvas ``text`` limit).
    """
    (entry,) = _character_entries([character])
    if entry.name in config.prompts:
        prompts = list(config.prompts[entry.name])
    else:
        prompts = [t.format(name=entry.caption_name, description=entry.description).strip()
                   for t in config.prompt_templates]
    for k, text in enumerate(prompts):
        if not NOVA_TEXT_MIN_CHARS <= len(text) <= NOVA_TEXT_MAX_CHARS:
            raise InputError(f"prompt {k} of {entry.name!r} has {len(text)} characters; Nova Canvas accepts "
                             f"{NOVA_TEXT_MIN_CHARS} to {NOVA_TEXT_MAX_CHARS}. Shorten evaluation.prompt_templates "
                             "or the character's description")
    return prompts


def build_requests(config: EvaluationConfig, characters: Sequence[CharacterConfig | str],
                   backend: Limits = "nova-canvas") -> list[TextImageRequest]:
    """The prompt set: one validated request per (character, prompt, seed), in a fixed order.

    Args:
        config: prompts, seeds, images per prompt, negative prompt; the size and guidance come from the
            section itself for ``nova-canvas`` and from ``config.diffusers`` for ``diffusers`` (width, height,
            num_inference_steps, guidance_scale as ``cfg_scale``).
        characters: the characters to generate.
        backend: whose limits the requests are built for and validated against.

    Raises:
        InputError: no character, or a rendered prompt or setting breaks the backend's limits.
    """
    entries = _character_entries(characters)
    if not entries:
        raise InputError("no character to generate images of; configure `characters` in pipeline.yaml")
    unknown = sorted(set(config.prompts) - {c.name for c in entries})
    if unknown:
        log.warning("evaluation.prompts has entries for characters not evaluated: %s", unknown)
    requests: list[TextImageRequest] = []
    for entry in entries:
        for k, text in enumerate(character_prompts(config, entry)):
            for seed in config.seeds:
                if backend == "diffusers":
                    d = config.diffusers.sized(None)
                    request = TextImageRequest(
                        character=entry.name, prompt_index=k, prompt=text, seed=seed,
                        number_of_images=config.images_per_prompt, negative_prompt=config.negative_prompt,
                        width=d.width, height=d.height, cfg_scale=d.guidance_scale, quality=None,
                        ordinal=len(requests), num_inference_steps=d.num_inference_steps, limits="diffusers")
                else:
                    request = TextImageRequest(
                        character=entry.name, prompt_index=k, prompt=text, seed=seed,
                        number_of_images=config.images_per_prompt, negative_prompt=config.negative_prompt,
                        width=config.width, height=config.height, cfg_scale=config.cfg_scale,
                        quality=config.quality, ordinal=len(requests))
                request.validate()  # before anything is sent
                requests.append(request)
    if backend == "diffusers":
        image_seeds = [set(range(s, s + config.images_per_prompt)) for s in config.seeds]
        if sum(map(len, image_seeds)) != len(set().union(*image_seeds)):
            log.warning("evaluation.seeds %s are closer than images_per_prompt (%d): the diffusers backend seeds "
                        "image i with seed + i, so some images of one prompt repeat", config.seeds,
                        config.images_per_prompt)
    return requests


__all__ = [
    "IMAGE_SUFFIXES", "RequestValidationError", "TextImageRequest", "build_requests", "character_prompts",
    "image_file_name", "parse_image_name", "validate_diffusers_request", "validate_text_image_body",
]
