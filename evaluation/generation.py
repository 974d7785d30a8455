"""Storyboard image generation behind one interface: Nova Canvas ``TEXT_IMAGE``, diffusers, or a folder.

Backends:

- :class:`NovaCanvasGenerator`: Amazon Nova Canvas through ``bedrock-runtime`` ``InvokeModel``, for the
  base model ID (``amazon.nova-canvas-v1:0``) or a fine-tuned model (its provisioned throughput ARN;
  custom Nova Canvas models run only on Provisioned Throughput, DESIGN.md §5).
- :class:`FolderImageGenerator`: offline; returns images already in ``DIR/<character>/``.
- ``evaluation.diffusers_generator.DiffusersGenerator``: Stable Diffusion XL base or base+LoRA through
  diffusers, in process (the ``sagemaker`` fine-tune backend).

:func:`build_requests` turns the ``evaluation`` section of ``pipeline.yaml`` into one
:class:`TextImageRequest` per (character, prompt, seed), each validated before anything is sent: against the
``TEXT_IMAGE`` limits (:func:`validate_text_image_body`) for Nova Canvas, or against diffusers' limits
(:func:`validate_diffusers_request`, settings from ``evaluation.diffusers``) for ``backend="diffusers"``.
:func:`generate_prompt_set` runs them and writes ``DIR/<character>/<character>_p<k>_s<seed>_<i>.png`` plus
``DIR/generation_log.json``.

Answers that are not failures of the run (recorded per prompt, never raised):

- a blocked prompt: ``InvokeModel`` raises ``ValidationException`` whose message is the content filter's;
- a blocked output: HTTP 200 with an ``error`` field and fewer images than requested;
- throttling and transient service errors that persist after ``max_attempts`` tries.

Access and model errors (``AccessDeniedException``, ``ResourceNotFoundException``, and a ``ValidationException``
whose message is not the content filter's, such as a wrong model ARN) stop the run with a
:class:`GenerationError`, since every further request would fail the same way.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from botocore.exceptions import ClientError
from PIL import Image, UnidentifiedImageError

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
from core.io import write_bytes, write_json

if TYPE_CHECKING:
    from core.config import AwsConfig, CharacterConfig

log = logging.getLogger(__name__)

GENERATION_LOG = "generation_log.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# <character>_p<k>_s<seed>_<i>.png: prompt index k, seed, image index i (all 0-based integers).
IMAGE_NAME_PATTERN = re.compile(r"^(?P<character>[a-z0-9][a-z0-9_-]*)_p(?P<prompt>\d+)_s(?P<seed>\d+)_(?P<index>\d+)"
                                r"\.(?:png|jpe?g|webp)$")
MIN_READ_TIMEOUT_S = 300  # Nova Canvas can take minutes per request (DESIGN.md §5)

# InvokeModel errors worth retrying with back-off (bedrock-runtime service model; Bedrock "Troubleshooting
# API error codes"). ValidationException is not among them. It means a blocked prompt only when its message is
# the content filter's ("This request has been blocked by our content filters."); any other ValidationException
# (an unknown model ID or ARN, a malformed request) would fail every request the same way, so it is fatal.
RETRYABLE_ERRORS = frozenset({
    "ThrottlingException", "ServiceUnavailableException", "ModelTimeoutException", "InternalServerException",
    "ModelNotReadyException",
})
FATAL_ERRORS = frozenset({"AccessDeniedException", "ResourceNotFoundException", "UnrecognizedClientException"})
CONTENT_FILTER_MESSAGE = re.compile(r"content filter", re.IGNORECASE)


def is_content_filter_message(message: str) -> bool:
    """True when a ``ValidationException``'s message is the content filter's (Bedrock: "This request has been
    blocked by our content filters.")."""
    return bool(CONTENT_FILTER_MESSAGE.search(message or ""))

Status = Literal["ok", "partly_blocked", "blocked_output", "blocked_prompt", "failed"]
Limits = Literal["nova-canvas", "diffusers"]
MAX_TORCH_SEED = 2**64 - 1  # torch.Generator.manual_seed accepts 0..2**64-1


class RequestValidationError(InputError):
    """A request breaks its backend's limits (Nova Canvas ``TEXT_IMAGE`` or diffusers); raised before it is
    sent."""


class GenerationError(RuntimeError):
    """Generation cannot go on (no access to the model, unknown model ID or ARN); the message says why."""


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


@dataclass
class GenerationOutcome:
    """What one request produced.

    Attributes:
        request: the request.
        status: ``ok`` (all images), ``partly_blocked`` (HTTP 200 with an ``error`` field and fewer
            images), ``blocked_output`` (an ``error`` field and no image), ``blocked_prompt``
            (``ValidationException`` with the content filter's message: the input was blocked), ``failed``
            (throttling or a transient error after every attempt, or an unusable answer).
        images: PNG bytes of each returned image (not written to the log).
        error: the service's message for any status other than ``ok``.
        attempts: requests sent (1 plus retries).
        files: paths of the written images relative to the output folder.
    """

    request: TextImageRequest
    status: Status
    images: list[bytes] = field(default_factory=list, repr=False)
    error: str | None = None
    attempts: int = 1
    files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The generation-log record: the request, status, returned count, error, attempts, files."""
        return {**self.request.to_json(), "status": self.status, "requested": self.request.number_of_images,
                "returned": len(self.files) if self.files else len(self.images), "error": self.error,
                "attempts": self.attempts, "files": list(self.files)}


@runtime_checkable
class ImageGenerator(Protocol):
    """Generates the images of one :class:`TextImageRequest`.

    Attributes:
        name: backend identifier (``nova-canvas``, ``folder`` or ``diffusers``).
        model_id: the model ID or ARN (or folder) the images come from, written to the log.
    """

    name: str
    model_id: str

    def generate(self, request: TextImageRequest) -> GenerationOutcome:
        """Return the request's outcome; blocked prompts and outputs are outcomes, not exceptions."""
        ...


def _as_png(data: bytes, source: str) -> bytes:
    """Return ``data`` unchanged if it is a PNG, else re-encoded as PNG.

    Raises:
        ValueError: the bytes are not an image.
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return data
    try:
        with Image.open(io.BytesIO(data)) as img:
            buffer = io.BytesIO()
            img.convert("RGB").save(buffer, format="PNG")
            return buffer.getvalue()
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{source} is not a readable image: {err}") from None


class NovaCanvasGenerator:
    """Amazon Nova Canvas ``TEXT_IMAGE`` through ``bedrock-runtime`` ``InvokeModel``.

    Args:
        client: a ``bedrock-runtime`` client (use :meth:`from_config` for the project's retry and timeout
            policy: botocore adaptive retries, read timeout at least 300 s).
        model_id: ``amazon.nova-canvas-v1:0`` for the base model, or the provisioned throughput ARN
            (``arn:aws:bedrock:<region>:<account>:provisioned-model/<id>``) of a fine-tuned model.
        max_attempts: tries per request on throttling and transient errors (on top of botocore's own
            retries), with exponential back-off from ``backoff_s`` seconds and full jitter.
        sleep: the wait function (tests pass a no-op).
    """

    name = "nova-canvas"

    def __init__(self, client: Any, model_id: str, max_attempts: int = 6, backoff_s: float = 2.0,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None) -> None:
        if not model_id:
            raise InputError("Nova Canvas model ID is empty; give the base model ID or a provisioned "
                             "throughput ARN")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self.client = client
        self.model_id = model_id
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self._sleep = sleep
        self._rng = rng or random.Random(0)

    @classmethod
    def from_config(cls, config: EvaluationConfig, aws: AwsConfig, model_id: str,
                    client: Any = None) -> NovaCanvasGenerator:
        """Build a generator for ``model_id`` with a ``bedrock-runtime`` client from ``aws`` (region,
        profile, adaptive retries) and a read timeout of at least 300 s; ``client`` overrides it."""
        if client is None:
            from core.aws import client_from_config

            client = client_from_config("bedrock-runtime", aws, min_read_timeout_s=MIN_READ_TIMEOUT_S)
        return cls(client, model_id, max_attempts=config.max_attempts, backoff_s=config.backoff_s)

    def _backoff(self, attempt: int) -> float:
        return self._rng.uniform(0.0, self.backoff_s * (2 ** (attempt - 1)))

    def generate(self, request: TextImageRequest) -> GenerationOutcome:
        """Send ``request`` (validated first) and decode the answer.

        Raises:
            RequestValidationError: the request breaks a Nova Canvas limit (nothing is sent).
            GenerationError: access denied, unknown model, or a ValidationException whose message is not the
                content filter's (a wrong model ARN, a malformed request): every request would fail.
        """
        body = json.dumps(request.body())
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self.client.invoke_model(modelId=self.model_id, body=body,
                                                    contentType="application/json", accept="application/json")
                break
            except ClientError as err:
                code = err.response.get("Error", {}).get("Code", "")
                message = err.response.get("Error", {}).get("Message", str(err))
                if code == "ValidationException" and not is_content_filter_message(message):
                    raise GenerationError(
                        f"InvokeModel on {self.model_id} was rejected with ValidationException: {message}. This is "
                        "not the content filter: check the model ID or provisioned throughput ARN (a custom Nova "
                        "Canvas model runs only on Provisioned Throughput) and the request settings in the "
                        "evaluation section") from err
                if code == "ValidationException":
                    log.warning("prompt blocked (%s p%d seed %d): %s", request.character, request.prompt_index,
                                request.seed, message)
                    return GenerationOutcome(request, "blocked_prompt", error=f"{code}: {message}",
                                             attempts=attempt)
                if code in FATAL_ERRORS:
                    raise GenerationError(f"InvokeModel on {self.model_id} failed with {code}: {message}. "
                                          "Check the model ID or provisioned throughput ARN, the region, and "
                                          "bedrock:InvokeModel permission.") from err
                if code in RETRYABLE_ERRORS and attempt < self.max_attempts:
                    wait = self._backoff(attempt)
                    log.info("%s on %s; retry %d/%d in %.1f s", code, self.model_id, attempt,
                             self.max_attempts - 1, wait)
                    self._sleep(wait)
                    continue
                return GenerationOutcome(request, "failed", error=f"{code}: {message}", attempts=attempt)
        try:
            payload = json.loads(response["body"].read())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            return GenerationOutcome(request, "failed", error=f"answer is not JSON: {err}", attempts=attempt)
        images: list[bytes] = []
        for k, encoded in enumerate(payload.get("images") or []):
            try:
                images.append(_as_png(base64.b64decode(encoded, validate=True), f"image {k} of the answer"))
            except (binascii.Error, ValueError) as err:
                return GenerationOutcome(request, "failed", error=f"image {k} of the answer: {err}",
                                         attempts=attempt)
        error = payload.get("error")
        if error or len(images) < request.number_of_images:
            status: Status = "partly_blocked" if images else "blocked_output"
            message = error or f"{len(images)} of {request.number_of_images} images returned"
            log.warning("output %s (%s p%d seed %d): %s", status, request.character, request.prompt_index,
                        request.seed, message)
            return GenerationOutcome(request, status, images=images, error=str(message), attempts=attempt)
        return GenerationOutcome(request, "ok", images=images[:request.number_of_images], attempts=attempt)


class FolderImageGenerator:
    """Offline generator: images already in ``root/<character>/`` (for example from an earlier run).

    For a request it returns the files named as :func:`image_file_name` would name them where they
    exist; otherwise the folder's images in sorted order, starting at ``ordinal * number_of_images``
    and wrapping around, so a prompt set of any size gets a deterministic answer.

    Raises (from :meth:`generate`):
        InputError: the character has no folder or no image under ``root``; an image cannot be read.
    """

    name = "folder"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"image folder {self.root} does not exist; give a folder with <character>/ "
                             "sub-folders of images")
        self.model_id = f"folder:{self.root}"

    def _files(self, character: str) -> list[Path]:
        folder = self.root / character
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()) \
            if folder.is_dir() else []
        if not files:
            raise InputError(f"{folder} has no images (png, jpg, webp); the folder generator needs "
                             f"{self.root}/{character}/ with images")
        return files

    def generate(self, request: TextImageRequest) -> GenerationOutcome:
        """Return the request's images from the folder (always status ``ok``)."""
        files = self._files(request.character)
        by_name = {p.name: p for p in files}
        chosen: list[Path] = []
        for i, name in enumerate(request.file_names()):
            if name in by_name:
                chosen.append(by_name[name])
            else:
                chosen.append(files[(request.ordinal * request.number_of_images + i) % len(files)])
        try:
            images = [_as_png(p.read_bytes(), str(p)) for p in chosen]
        except ValueError as err:
            raise InputError(str(err)) from None
        return GenerationOutcome(request, "ok", images=images)


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


@dataclass
class GenerationLog:
    """The result of :func:`generate_prompt_set`: every outcome, and the log path.

    ``counts`` maps each status to its number of requests; ``images`` is the number of images written.
    """

    model_id: str
    generator: str
    outcomes: list[GenerationOutcome]
    path: Path

    @property
    def counts(self) -> dict[str, int]:
        """Requests per status."""
        counts: dict[str, int] = {}
        for outcome in self.outcomes:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        return counts

    @property
    def images(self) -> int:
        """Images written."""
        return sum(len(o.files) for o in self.outcomes)

    def to_json(self) -> dict[str, Any]:
        """The ``generation_log.json`` document."""
        return {
            "model_id": self.model_id,
            "generator": self.generator,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "requests": len(self.outcomes),
            "images": self.images,
            "counts": self.counts,
            "records": [o.to_json() for o in self.outcomes],
        }


def generate_prompt_set(generator: ImageGenerator, requests: Sequence[TextImageRequest], out_dir: str | Path,
                        concurrency: int = 1, progress: bool = False) -> GenerationLog:
    """Run every request and write ``out_dir/<character>/<character>_p<k>_s<seed>_<i>.png`` plus
    ``out_dir/generation_log.json`` (atomically).

    A blocked prompt or output, or a request still throttled after its retries, is recorded in the log
    and the run goes on. ``concurrency`` requests run in parallel (1..16). ``progress`` shows a tqdm bar
    over the requests (on stderr).

    Raises:
        RequestValidationError: a request breaks its backend's limits (checked for all before any is sent).
        GenerationError: the model cannot be reached at all (access, unknown ID).
    """
    from tqdm import tqdm

    if not 1 <= concurrency <= 16:
        raise ValueError(f"concurrency must be 1..16, got {concurrency}")
    for request in requests:
        request.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def run(request: TextImageRequest) -> GenerationOutcome:
        outcome = generator.generate(request)
        names = request.file_names()
        files = []
        for name, data in zip(names, outcome.images[:len(names)], strict=False):
            write_bytes(out_dir / request.character / name, data)
            files.append(f"{request.character}/{name}")
        outcome.files = files
        return outcome

    with tqdm(total=len(requests), desc=f"{generator.name} prompt set", unit="request", disable=not progress) as bar:
        def step(request: TextImageRequest) -> GenerationOutcome:
            outcome = run(request)
            bar.update(1)
            return outcome

        if concurrency == 1 or len(requests) <= 1:
            outcomes = [step(r) for r in requests]
        else:
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                outcomes = list(pool.map(step, requests))
    for outcome in outcomes:
        outcome.images = []  # written; free the memory
    result = GenerationLog(model_id=generator.model_id, generator=generator.name, outcomes=outcomes,
                           path=out_dir / GENERATION_LOG)
    write_json(result.path, result.to_json())
    log.info("generated %d images for %d requests with %s: %s", result.images, len(outcomes),
             generator.model_id, result.counts)
    return result


def read_generation_log(images_dir: str | Path) -> dict[str, Any] | None:
    """Read ``images_dir/generation_log.json`` if it exists (``None`` otherwise).

    Raises:
        InputError: the file exists but is not a JSON object with a ``records`` list.
    """
    path = Path(images_dir) / GENERATION_LOG
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"{path} is not valid JSON ({err.msg}); delete it or re-run the generation") from None
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise InputError(f"{path} has no 'records' list; it is not a generation log of this project")
    return data


__all__ = [
    "FolderImageGenerator", "GENERATION_LOG", "GenerationError", "GenerationLog", "GenerationOutcome",
    "ImageGenerator", "NovaCanvasGenerator", "RequestValidationError", "TextImageRequest", "build_requests",
    "character_prompts", "generate_prompt_set", "image_file_name", "parse_image_name", "read_generation_log",
    "validate_diffusers_request", "validate_text_image_body",
]
