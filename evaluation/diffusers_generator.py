"""Stable Diffusion XL generation for the Evaluate step of the ``sagemaker`` fine-tune backend.

:class:`DiffusersGenerator` implements :class:`evaluation.generators.ImageGenerator` with diffusers: the base
model alone, or base plus the LoRA the training job wrote (``pytorch_lora_weights.safetensors``), loaded
once per generator through :func:`steps.lora.model.load_pipeline`. Feed it requests built with
``evaluation.prompt_set.build_requests(config, characters, backend="diffusers")`` (sizes, steps and
guidance from ``evaluation.diffusers``) and run them with :func:`evaluation.generation.generate_prompt_set`.

Seeds: image ``i`` of a request (0-based) starts from latents drawn by its own CPU ``torch.Generator``
seeded with ``request.seed + i`` (:func:`image_generators`). So the base and the fine-tuned generator start
every image from the same noise, an image does not depend on how many images the request asks for, and
image 0 of seed ``s`` is what the endpoint returns for seed ``s`` at the same settings (up to the numerical
differences between devices). CPU generators give the same noise on a CPU and on a GPU (diffusers'
reproducibility guide).

:func:`describe_model` and :func:`training_summary` give the ``model`` block of ``evaluation.json``: the
backend, the base model (and whether it is the untrained random-weight stand-in, whose figures test the
machinery, not the quality), the LoRA artifact and the training run (steps, losses).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import InputError
from evaluation.generators import GenerationError, GenerationOutcome
from evaluation.prompt_set import TextImageRequest
from steps.lora.model import LORA_WEIGHTS_NAME, BaseModelInfo, check_base_model, load_pipeline

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

STAND_IN_WARNING = ("the base model is an untrained random-weight stand-in with the Stable Diffusion XL "
                    "architecture: these figures test the machinery, not the quality")
# Losses averaged for the smoothed final loss (the per-step loss of diffusion training is noisy).
FINAL_LOSS_WINDOW = 10


def image_generators(seed: int, count: int) -> list[torch.Generator]:
    """``count`` CPU ``torch.Generator`` objects, the ``i``-th seeded with ``seed + i`` (one per image).

    Raises:
        ValueError: ``count`` below 1, or a seed outside 0..2**64-1 (``torch.Generator.manual_seed``).
    """
    import torch

    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if seed < 0 or seed + count - 1 > 2**64 - 1:
        raise ValueError(f"seeds {seed}..{seed + count - 1} are outside 0..2**64-1")
    return [torch.Generator(device="cpu").manual_seed(seed + i) for i in range(count)]


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


class DiffusersGenerator:
    """Stable Diffusion XL (base, or base + LoRA) through diffusers, in this process.

    Args:
        base: a diffusers SDXL folder (checked at once with :func:`steps.lora.model.check_base_model`).
        lora_dir: a folder holding ``pytorch_lora_weights.safetensors`` (the extracted ``model.tar.gz``), or
            ``None`` for the base model alone.
        device: ``auto`` (cuda when available, else cpu), ``cpu`` or ``cuda``.
        dtype: ``auto`` (float16 on CUDA, float32 on the CPU), ``float32``, ``float16``, ``bfloat16``.
        pipeline: an already loaded pipeline (tests); otherwise it is loaded on the first request, once.

    Attributes:
        name: ``diffusers``; model_id: ``<base folder>`` or ``<base folder> + LoRA <lora folder>``.
        base_info: the :class:`steps.lora.model.BaseModelInfo` of ``base``.

    Raises:
        InputError: ``base`` is not an SDXL folder, or ``lora_dir`` has no LoRA weights file (both before
            anything is loaded).
    """

    name = "diffusers"

    def __init__(self, base: str | Path, lora_dir: str | Path | None = None, *, device: str = "auto",
                 dtype: str = "auto", pipeline: Any = None) -> None:
        self.base_info: BaseModelInfo = check_base_model(base)
        if lora_dir is not None and not (Path(lora_dir) / LORA_WEIGHTS_NAME).is_file():
            raise InputError(f"LoRA folder {lora_dir} has no {LORA_WEIGHTS_NAME}; give the extracted model.tar.gz "
                             "of the LoRA training job")
        if device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
            raise InputError(f"device {device!r}: use auto, cpu or cuda")
        self.base = Path(base)
        self.lora_dir = Path(lora_dir) if lora_dir is not None else None
        self.device = device
        self.dtype = dtype
        self.model_id = str(self.base) if self.lora_dir is None else f"{self.base} + LoRA {self.lora_dir}"
        self._pipeline = pipeline

    @property
    def pipeline(self) -> Any:
        """The ``StableDiffusionXLPipeline``, loaded on first use (once per generator)."""
        if self._pipeline is None:
            log.info("loading %s on %s (%s)", self.model_id, self.device, self.dtype)
            self._pipeline = load_pipeline(self.base, self.lora_dir, device=self.device, dtype=self.dtype)
            self._pipeline.set_progress_bar_config(disable=True)
        return self._pipeline

    def generate(self, request: TextImageRequest) -> GenerationOutcome:
        """Generate ``request.number_of_images`` images (PNG bytes) at the request's size, steps and guidance;
        image ``i`` is seeded with ``request.seed + i``. Always status ``ok``: SDXL has no content filter here.

        Raises:
            RequestValidationError: the request was not built for diffusers or breaks its limits.
            GenerationError: the accelerator ran out of memory (every further request would too).
        """
        import torch

        if request.limits != "diffusers":
            raise InputError(f"request for {request.character} was built for {request.limits}; build the prompt "
                             "set with build_requests(..., backend='diffusers')")
        request.validate()
        try:
            with torch.inference_mode():
                result = self.pipeline(
                    prompt=request.prompt, negative_prompt=request.negative_prompt, width=request.width,
                    height=request.height, num_inference_steps=request.num_inference_steps,
                    guidance_scale=float(request.cfg_scale), num_images_per_prompt=request.number_of_images,
                    generator=image_generators(request.seed, request.number_of_images), output_type="pil")
        except torch.cuda.OutOfMemoryError as err:
            raise GenerationError(f"{self.model_id}: out of accelerator memory at {request.width} x {request.height} "
                                  f"px, {request.number_of_images} image(s) per prompt; lower "
                                  "evaluation.images_per_prompt or the size, or use a larger instance") from err
        return GenerationOutcome(request, "ok", images=[_png(image) for image in result.images])

    def close(self) -> None:
        """Drop the pipeline and free the accelerator's cache (before loading the next model)."""
        self._pipeline = None
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def training_summary(rows: Sequence[Mapping[str, Any]], training_config: Mapping[str, Any] | None = None
                     ) -> dict[str, Any] | None:
    """Summarise a training log (``training_log.jsonl`` rows: ``step``, ``loss``, ``lr``, ``elapsed_s``).

    Returns ``None`` for an empty log, else ``steps`` (the last logged step), ``max_train_steps`` (from
    ``training_config["hyperparameters"]`` where present), ``logged_steps``, ``first_loss``, ``final_loss``
    (the last logged loss), ``final_loss_smoothed`` (mean of the last 10 logged losses), ``min_loss``,
    ``elapsed_s`` (seconds, the last row's) and ``loss_curve`` (``None``; set by the caller that draws it).
    Rows without a finite numeric ``loss`` are left out of the loss figures.
    """
    import math

    if not rows:
        return None
    losses = [float(r["loss"]) for r in rows
              if isinstance(r.get("loss"), (int, float)) and math.isfinite(float(r["loss"]))]
    steps = [int(r["step"]) for r in rows if isinstance(r.get("step"), (int, float))]
    hyper = (training_config or {}).get("hyperparameters") or {}
    max_steps = hyper.get("max_train_steps")
    try:
        max_steps = int(max_steps) if max_steps is not None else None
    except (TypeError, ValueError):
        max_steps = None
    elapsed = rows[-1].get("elapsed_s")
    tail = losses[-FINAL_LOSS_WINDOW:]
    return {
        "steps": max(steps) if steps else None,
        "max_train_steps": max_steps,
        "logged_steps": len(rows),
        "first_loss": round(losses[0], 6) if losses else None,
        "final_loss": round(losses[-1], 6) if losses else None,
        "final_loss_smoothed": round(sum(tail) / len(tail), 6) if tail else None,
        "min_loss": round(min(losses), 6) if losses else None,
        "elapsed_s": round(float(elapsed), 3) if isinstance(elapsed, (int, float)) else None,
        "loss_curve": None,
    }


def describe_model(backend: str, *, base: BaseModelInfo | None = None, base_model_id: str | None = None,
                   lora_artifact: str | None = None, lora_dir: str | Path | None = None,
                   finetuned_model_id: str | None = None, training_log: Sequence[Mapping[str, Any]] | None = None,
                   training_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``model`` block of ``evaluation.json`` (schema ``$defs/evaluated_model``).

    Args:
        backend: ``sagemaker`` (SDXL + LoRA) or ``bedrock`` (a Bedrock custom model).
        base: the SDXL base folder's description (``sagemaker``); ``base_model_id`` names a Bedrock base.
        lora_artifact: where the LoRA came from (the training job's ``model.tar.gz`` URI or path).
        lora_dir: the extracted folder (its weights file is recorded).
        finetuned_model_id: the Bedrock fine-tuned model (provisioned throughput ARN).
        training_log, training_config: the artifact's ``training_log.jsonl`` rows and ``training_config.json``.

    Returns:
        ``{"backend", "base": {"description", "path", "model_id", "license"}, "stand_in", "lora":
        {"artifact", "weights"} | None, "finetuned_model_id", "training": training_summary(...) | None}``.
    """
    if backend not in ("sagemaker", "bedrock"):
        raise ValueError(f"backend must be sagemaker or bedrock, got {backend!r}")
    lora = None
    if lora_dir is not None or lora_artifact is not None:
        weights = Path(lora_dir) / LORA_WEIGHTS_NAME if lora_dir is not None else None
        lora = {"artifact": lora_artifact or (str(lora_dir) if lora_dir is not None else None),
                "weights": str(weights) if weights is not None and weights.is_file() else None}
    return {
        "backend": backend,
        "base": {"description": base.description if base else (base_model_id or "unknown"),
                 "path": str(base.path) if base else None, "model_id": base_model_id,
                 "license": base.license if base else None},
        "stand_in": bool(base.stand_in) if base else False,
        "lora": lora,
        "finetuned_model_id": finetuned_model_id,
        "training": training_summary(training_log or [], training_config),
    }


__all__ = ["DiffusersGenerator", "STAND_IN_WARNING", "describe_model", "image_generators", "training_summary"]
