"""SageMaker real-time endpoint handler: Stable Diffusion XL base + this run's LoRA, one PNG per request.

The SageMaker inference toolkit (in the AWS PyTorch inference container) serves ``/ping`` and
``/invocations`` on port 8080 and calls, in order, :func:`model_fn` once per worker, then :func:`input_fn`,
:func:`predict_fn` and :func:`output_fn` for every request (``SAGEMAKER_PROGRAM=inference.py``; see
``containers/inference/Dockerfile``). It needs no server of our own.

Model data (the model package's containers, DESIGN §5):

- ``ModelDataUrl``: the training job's ``model.tar.gz``, extracted by SageMaker to ``/opt/ml/model``
  (``pytorch_lora_weights.safetensors``, ``training_config.json``, ...);
- the additional model data source ``base_model``: the diffusers SDXL folder, mounted at
  ``/opt/ml/additional-model-data-sources/base_model/`` (``$STORYBOARD_BASE_MODEL_DIR`` overrides it).

Request (``Content-Type: application/json``)::

    {"prompt": str, "seed": int, "negative_prompt"?: str, "num_inference_steps"?: int,
     "guidance_scale"?: float, "width"?: int, "height"?: int}

Limits: ``prompt`` 1..4,000 characters (the CLIP tokenizers keep the first 77 tokens); ``negative_prompt``
at most 4,000; ``seed`` 0..4,294,967,295; ``width``/``height`` 64..2,048 px, multiples of 8
(``StableDiffusionXLPipeline``); ``num_inference_steps`` 1..200; ``guidance_scale`` 0..30 (the limits of
``evaluation.diffusers``). Defaults: the LoRA's training resolution (``training_config.json``), else 1,024
px (64 px for the random-weight stand-in); 30 steps; guidance 7.5. Image ``seed`` starts from the latents of
a CPU ``torch.Generator`` seeded with ``seed``: the image the Evaluate step scored as ``..._s<seed>_0.png``
at the same settings.

Response: ``image/png`` bytes (Accept ``image/png``, ``image/*``, ``*/*`` or none), or ``application/json``
``{"image": <base64 PNG>, "content_type": "image/png", "seed", "width", "height", "num_inference_steps",
"guidance_scale", "stand_in"}``. A bad request raises :class:`RequestError`, which the toolkit answers with
its status code (400 bad body, 406 unsupported Accept, 415 unsupported Content-Type) and message.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.evaluation_config import (
    DIFFUSERS_MAX_GUIDANCE,
    DIFFUSERS_MAX_STEPS,
    DIFFUSERS_MIN_GUIDANCE,
    DIFFUSERS_MIN_STEPS,
    check_diffusers_size,
)

try:  # the serving container's toolkit: its errors carry the HTTP status the client gets
    from sagemaker_inference.errors import GenericInferenceToolkitError as _ToolkitError
except ImportError:  # outside the serving container (tests, local use): the same constructor and attributes
    class _ToolkitError(Exception):  # type: ignore[no-redef]
        def __init__(self, status_code: int, message: str | None = None, phrase: str | None = None) -> None:
            self.status_code = status_code
            self.message = message or "Invalid Request"
            self.phrase = phrase or self.message
            super().__init__(status_code, self.message, self.phrase)

log = logging.getLogger(__name__)

BASE_MODEL_DIR_ENV = "STORYBOARD_BASE_MODEL_DIR"
DEFAULT_BASE_MODEL_DIR = Path("/opt/ml/additional-model-data-sources/base_model")
DEVICE_ENV = "STORYBOARD_DEVICE"  # auto (default), cpu, cuda
DTYPE_ENV = "STORYBOARD_DTYPE"  # auto (default: float16 on CUDA), float32, float16, bfloat16
MAX_PROMPT_CHARS = 4000
MAX_SEED = 2**32 - 1
DEFAULT_SIDE_PX = 1024  # SDXL base 1.0's resolution
DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 7.5
REQUEST_KEYS = ("prompt", "seed", "negative_prompt", "num_inference_steps", "guidance_scale", "width", "height")
PNG = "image/png"
JSON = "application/json"


class RequestError(_ToolkitError):
    """A request the endpoint refuses; ``status_code`` is the HTTP status (400, 406 or 415), ``message`` the
    reason, both sent to the client by the inference toolkit."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(status_code, message, message)

    def __str__(self) -> str:
        return self.message


@dataclass
class LoadedModel:
    """What :func:`model_fn` loads: the pipeline, where it came from, and the request defaults.

    Attributes:
        pipeline: the ``StableDiffusionXLPipeline`` with the LoRA loaded.
        base: the base model's ``steps.lora.model.BaseModelInfo``; lora_dir: the LoRA folder.
        width, height: default size in px; num_inference_steps, guidance_scale: default settings.
    """

    pipeline: Any
    base: Any
    lora_dir: Path
    width: int = DEFAULT_SIDE_PX
    height: int = DEFAULT_SIDE_PX
    num_inference_steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE


def _default_side(lora_dir: Path, stand_in: bool) -> int:
    """The LoRA's training resolution (``training_config.json`` ``hyperparameters.resolution``), else 64 px for
    the stand-in and 1,024 px otherwise."""
    try:
        config = json.loads((lora_dir / "training_config.json").read_text(encoding="utf-8"))
        side = int((config.get("hyperparameters") or {})["resolution"])
        check_diffusers_size(side, side)
        return side
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return 64 if stand_in else DEFAULT_SIDE_PX


def model_fn(model_dir: str) -> LoadedModel:
    """Load SDXL from the ``base_model`` data source with the LoRA of ``model_dir`` (once per worker).

    ``model_dir`` is ``/opt/ml/model``: the extracted ``model.tar.gz`` (or a folder holding the archive).

    Raises:
        core.errors.InputError: the base folder is not a diffusers SDXL model, or ``model_dir`` has no LoRA
            weights (the endpoint then fails its health check with this message in the log).
    """
    from steps.lora.artifacts import unpack_model_artifacts
    from steps.lora.model import check_base_model, load_pipeline

    base_dir = Path(os.environ.get(BASE_MODEL_DIR_ENV) or DEFAULT_BASE_MODEL_DIR)
    base = check_base_model(base_dir)
    lora_dir = unpack_model_artifacts(Path(model_dir), Path(tempfile.gettempdir()) / "storyboard-lora")
    if base.stand_in:
        log.warning("the base model at %s is the untrained random-weight stand-in: its images test the machinery, "
                    "not the quality", base_dir)
    pipeline = load_pipeline(base.path, lora_dir, device=os.environ.get(DEVICE_ENV) or "auto",
                             dtype=os.environ.get(DTYPE_ENV) or "auto")
    side = _default_side(lora_dir, base.stand_in)
    log.info("loaded %s + LoRA %s; default size %d px", base.description, lora_dir, side)
    return LoadedModel(pipeline=pipeline, base=base, lora_dir=lora_dir, width=side, height=side)


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _integer(data: dict[str, Any], key: str, low: int, high: int) -> None:
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(f"'{key}' must be an integer, got {json.dumps(value)}")
    if not low <= value <= high:
        raise RequestError(f"'{key}' must be {low}..{high}, got {value}")


def input_fn(body: bytes | str, content_type: str | None) -> dict[str, Any]:
    """Parse and validate a request body (see the module docstring); return the given fields.

    Raises:
        RequestError: 415 for a Content-Type other than ``application/json``; 400 for a body that is not a
            JSON object, an unknown key, a missing or empty ``prompt``, a missing ``seed``, a wrong type, or a
            value outside its limits (sizes not multiples of 8, steps outside 1..200, ...).
    """
    if _media_type(content_type) != JSON:
        raise RequestError(f"Content-Type {content_type!r} is not supported; send application/json", 415)
    try:
        data = json.loads(body.decode("utf-8") if isinstance(body, (bytes, bytearray)) else body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(f"the body is not valid JSON ({err}); send {{\"prompt\": ..., \"seed\": ...}}") from None
    if not isinstance(data, dict):
        raise RequestError(f"the body must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(REQUEST_KEYS))
    if unknown:
        raise RequestError(f"unknown key(s) {unknown}; accepted: {list(REQUEST_KEYS)}")
    for key in ("prompt", "seed"):
        if key not in data:
            raise RequestError(f"'{key}' is required")
    for key in ("prompt", "negative_prompt"):
        if key in data:
            value = data[key]
            if not isinstance(value, str) or (key == "prompt" and not value.strip()):
                raise RequestError(f"'{key}' must be a non-empty string" if key == "prompt"
                                   else f"'{key}' must be a string")
            if len(value) > MAX_PROMPT_CHARS:
                raise RequestError(f"'{key}' has {len(value)} characters; at most {MAX_PROMPT_CHARS}")
    _integer(data, "seed", 0, MAX_SEED)
    if "num_inference_steps" in data:
        _integer(data, "num_inference_steps", DIFFUSERS_MIN_STEPS, DIFFUSERS_MAX_STEPS)
    if "guidance_scale" in data:
        value = data["guidance_scale"]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
                or not DIFFUSERS_MIN_GUIDANCE <= value <= DIFFUSERS_MAX_GUIDANCE:
            raise RequestError(f"'guidance_scale' must be a number in {DIFFUSERS_MIN_GUIDANCE}.."
                               f"{DIFFUSERS_MAX_GUIDANCE}, got {json.dumps(value)}")
    try:  # a missing side stands in as the smallest valid one; the model's default replaces it later
        check_diffusers_size(data.get("width", 64), data.get("height", 64))
    except ValueError as err:
        raise RequestError(str(err)) from None
    return data


def predict_fn(data: dict[str, Any], model: LoadedModel) -> dict[str, Any]:
    """Generate one image for a validated request, the model's defaults filling the missing settings.

    Returns:
        ``{"image": PIL.Image (RGB, width x height), "seed", "width", "height", "num_inference_steps",
        "guidance_scale", "stand_in"}``.
    """
    import torch

    settings = {"width": data.get("width", model.width), "height": data.get("height", model.height),
                "num_inference_steps": data.get("num_inference_steps", model.num_inference_steps),
                "guidance_scale": float(data.get("guidance_scale", model.guidance_scale))}
    generator = torch.Generator(device="cpu").manual_seed(data["seed"])
    with torch.inference_mode():
        result = model.pipeline(prompt=data["prompt"], negative_prompt=data.get("negative_prompt"),
                                num_images_per_prompt=1, generator=generator, output_type="pil", **settings)
    return {"image": result.images[0].convert("RGB"), "seed": data["seed"], **settings,
            "stand_in": bool(model.base.stand_in)}


def _accepted(accept: str | None) -> str:
    """The response type for an Accept header: PNG for none, ``*/*``, ``image/*`` or ``image/png``; JSON for
    ``application/json``; the first supported entry of a list wins."""
    if not accept or not accept.strip():
        return PNG
    for entry in accept.split(","):
        kind = _media_type(entry)
        if kind in (PNG, "image/*", "*/*"):
            return PNG
        if kind in (JSON, "application/*"):
            return JSON
    raise RequestError(f"Accept {accept!r} is not supported; ask for image/png or application/json", 406)


def output_fn(prediction: dict[str, Any], accept: str | None) -> tuple[bytes, str]:
    """Serialise a prediction: ``(PNG bytes, "image/png")`` or ``(JSON bytes, "application/json")``.

    Raises:
        RequestError: 406 for an Accept header naming neither type.
    """
    kind = _accepted(accept)
    buffer = io.BytesIO()
    prediction["image"].save(buffer, format="PNG")
    png = buffer.getvalue()
    if kind == PNG:
        return png, PNG
    document = {"image": base64.b64encode(png).decode("ascii"), "content_type": PNG,
                **{k: v for k, v in prediction.items() if k != "image"}}
    return json.dumps(document).encode("utf-8"), JSON
