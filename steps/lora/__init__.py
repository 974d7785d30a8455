"""LoRA fine-tune of Stable Diffusion XL (diffusers + peft): the FineTune step's logic, SageMaker-agnostic.

Modules, in diffusers' order: :mod:`~core.lora_settings` (hyperparameters, no torch),
:mod:`~steps.lora.data` (manifest -> dataset), :mod:`~steps.lora.model` (base model, stand-in, adapter),
:mod:`~steps.lora.loop` (training, checkpoints, resume), :mod:`~steps.lora.export` (weights and summary),
:mod:`~steps.lora.artifacts` (reading ``model.tar.gz``). :func:`run_lora_training` chains them; importing
this package imports no torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.lora_settings import HYPERPARAMETER_DEFAULTS, HYPERPARAMETER_LIMITS, LoraSettings, parse_hyperparameters

__all__ = ["HYPERPARAMETER_DEFAULTS", "HYPERPARAMETER_LIMITS", "LoraSettings", "parse_hyperparameters",
           "run_lora_training"]

log = logging.getLogger(__name__)


def run_lora_training(settings: LoraSettings, train_dir: str | Path, base_dir: str | Path, model_dir: str | Path,
                      checkpoints_dir: str | Path, review_dir: str | Path | None = None, device: str = "auto",
                      emit: Callable[[str], None] = print) -> dict[str, Any]:
    """Check every input, train the UNet LoRA, write the model folder; return ``training_config.json``'s dict.

    Checked before any model weights are loaded (each failure an ``InputError``): the base model
    (:func:`steps.lora.model.resolve_base_model`), the manifest and its images, ``min_records``, the caption
    token policy, the device for ``mixed_precision``, and that a checkpoint to resume from fits.
    """
    from steps.lora.data import (
        apply_caption_policy,
        check_min_records,
        dataset_summary,
        find_manifest,
        load_records,
    )
    from steps.lora.loop import check_resumable
    from steps.lora.model import resolve_base_model, resolve_device

    base = resolve_base_model(base_dir, settings.base_model_id)
    manifest = find_manifest(train_dir, review_dir)
    records = load_records(manifest, train_dir, review_dir)
    check_min_records(records, settings.min_records, manifest)
    from transformers import AutoTokenizer

    tokenizers = [AutoTokenizer.from_pretrained(str(base.path), subfolder=sub) for sub in ("tokenizer", "tokenizer_2")]
    records, truncated = apply_caption_policy(records, tokenizers, settings.caption_token_policy)
    summary = dataset_summary(records, manifest, truncated)
    device = resolve_device(device)
    if settings.mixed_precision != "no" and not device.startswith("cuda"):
        raise InputError(f"mixed_precision={settings.mixed_precision} needs a CUDA GPU; this job runs on {device}: "
                         "set mixed_precision=no or use a GPU instance")
    check_resumable(checkpoints_dir, settings, summary["digest"])
    if base.stand_in and settings.resolution > 128:
        log.warning("the stand-in base model was built for 64 px; resolution=%d only makes it slower (set "
                    "resolution=64 for local runs)", settings.resolution)
    emit(f"base model: {base.description} ({base.path}); {len(records)} records from {manifest}; "
         f"{len(truncated)} caption(s) truncated; device {device}")

    import torch

    from steps.lora.export import save_lora_weights, write_training_outputs
    from steps.lora.loop import train
    from steps.lora.model import load_components, resolve_dtype

    if settings.mixed_precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise InputError("mixed_precision=bf16: this GPU does not support bfloat16; use fp16 or no")
    weight_dtype = resolve_dtype(settings.mixed_precision, device)
    comps = load_components(base.path, device, weight_dtype)
    result = train(settings, comps, records, checkpoints_dir, device, summary["digest"], weight_dtype, emit)
    save_lora_weights(comps.unet, model_dir)
    outcome = {"steps": result.steps, "final_loss": result.final_loss, "resumed_from": result.resumed_from,
               "device": result.device, "elapsed_s": result.elapsed_s, "lora_parameters": result.lora_parameters}
    write_training_outputs(model_dir, settings, base, summary, result.log_rows, outcome)
    emit(f"wrote {Path(model_dir)} (final loss {result.final_loss})")
    return {"hyperparameters": settings.to_json(), "base_model": base.to_json(), "dataset": summary,
            "result": outcome}
