"""LoRA training hyperparameters: SageMaker's string values -> a validated, frozen :class:`LoraSettings`.

No torch import, so a command line (or the pipeline definition) can validate parameters cheaply.
SageMaker writes every hyperparameter as a string into ``/opt/ml/input/config/hyperparameters.json``;
some SDK versions JSON-encode strings (``"\\"truncate\\""``), which :func:`parse_hyperparameters` undoes.

Limits (:data:`HYPERPARAMETER_LIMITS`, inclusive) are the agreed contract's; the pipeline's parameters
import them. ``fp16``/``bf16`` need CUDA, which is checked where the device is known (the training loop).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from core.errors import InputError

# name -> (min, max), inclusive. Integers unless named in FLOAT_HYPERPARAMETERS.
HYPERPARAMETER_LIMITS: dict[str, tuple[float, float]] = {
    "max_train_steps": (1, 100_000),
    "learning_rate": (1e-7, 1e-2),
    "lora_rank": (1, 256),
    "resolution": (64, 2048),  # and a multiple of RESOLUTION_MULTIPLE
    "train_batch_size": (1, 64),
    "gradient_accumulation_steps": (1, 64),
    "seed": (0, 4_294_967_295),
    "checkpointing_steps": (1, 100_000),
    "checkpoints_total_limit": (1, 100),
    "min_records": (1, 100_000),
    "log_every": (1, 100_000),
    "lr_warmup_steps": (0, 100_000),
}
FLOAT_HYPERPARAMETERS = frozenset({"learning_rate"})
# name -> allowed string values; the first is not necessarily the default (see HYPERPARAMETER_DEFAULTS).
HYPERPARAMETER_CHOICES: dict[str, tuple[str, ...]] = {
    "mixed_precision": ("no", "fp16", "bf16"),
    "caption_token_policy": ("truncate", "refuse"),
    "lr_scheduler": ("constant", "cosine"),
}
# Free-text hyperparameters (None = not set).
OPTIONAL_STRING_HYPERPARAMETERS = ("base_model_id",)
# VAE downsampling (8) times the UNet's (2 or 4 levels): multiples of 8 keep latents whole.
RESOLUTION_MULTIPLE = 8
# SageMaker SDKs may add their own keys (sagemaker_program, sagemaker_region, ...); they are ignored.
IGNORED_PREFIXES = ("sagemaker_", "_")

# Fixed training constants (diffusers' train_text_to_image_lora_sdxl.py defaults).
ADAM_BETAS = (0.9, 0.999)
ADAM_WEIGHT_DECAY = 1e-2
ADAM_EPSILON = 1e-8
MAX_GRAD_NORM = 1.0
# CLIP text encoders of SDXL: 77 positions, BOS and EOS included (CLIPTextConfig.max_position_embeddings).
CAPTION_TOKEN_LIMIT = 77


@dataclass(frozen=True)
class LoraSettings:
    """Validated hyperparameters of one training job (defaults: the agreed contract's).

    Attributes:
        max_train_steps: optimizer steps to train (1..100000).
        learning_rate: AdamW peak learning rate (1e-7..1e-2).
        lora_rank: LoRA rank r (1..256); ``lora_alpha`` = r.
        resolution: square training size in pixels (64..2048, multiple of 8).
        train_batch_size: images per micro-batch (1..64).
        gradient_accumulation_steps: micro-batches per optimizer step (1..64).
        seed: seeds the adapter's initial weights, data order, noise and timesteps (0..2**32-1).
        mixed_precision: ``no``, ``fp16`` or ``bf16`` (the last two on CUDA only).
        checkpointing_steps: save a checkpoint every this many steps (1..100000).
        checkpoints_total_limit: checkpoints kept, the oldest pruned (1..100).
        min_records: fewer training records is an error (1..100000).
        log_every: a ``step= loss= lr=`` line every this many steps (1..100000; the last step always).
        lr_scheduler: ``constant`` or ``cosine`` (to 0 at ``max_train_steps``), both after a linear warm-up.
        lr_warmup_steps: steps of linear warm-up from 0 (0..100000).
        caption_token_policy: over-long captions (> 77 CLIP tokens): ``truncate`` (warn, count) or ``refuse``.
        base_model_id: Hub ID used only when the ``base_model`` channel holds no diffusers model.
    """

    max_train_steps: int = 500
    learning_rate: float = 1e-4
    lora_rank: int = 16
    resolution: int = 1024
    train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    seed: int = 42
    mixed_precision: str = "no"
    checkpointing_steps: int = 100
    checkpoints_total_limit: int = 2
    min_records: int = 5
    log_every: int = 1
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    caption_token_policy: str = "truncate"
    base_model_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return asdict(self)

    def trajectory_key(self) -> dict[str, Any]:
        """The settings a resumed run must share with its checkpoint to continue the same trajectory."""
        keep = ("learning_rate", "lora_rank", "resolution", "train_batch_size", "gradient_accumulation_steps",
                "seed", "mixed_precision", "lr_scheduler", "lr_warmup_steps", "caption_token_policy")
        return {name: getattr(self, name) for name in keep}


HYPERPARAMETER_DEFAULTS: dict[str, Any] = LoraSettings().to_json()


def _unquote(value: Any) -> Any:
    """``'"truncate"'`` -> ``'truncate'`` (JSON-encoded strings of some SageMaker SDKs); other values as is."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _number(name: str, value: Any) -> tuple[float | int | None, str | None]:
    """Parse and range-check one numeric hyperparameter; ``(value, None)`` or ``(None, problem)``."""
    low, high = HYPERPARAMETER_LIMITS[name]
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return None, f"{name}={value!r} is not a number"
    if not math.isfinite(number):
        return None, f"{name}={value!r} is not a finite number"
    if name not in FLOAT_HYPERPARAMETERS:
        if number != int(number):
            return None, f"{name}={value!r} is not a whole number"
        number = int(number)
    if not low <= number <= high:
        return None, f"{name}={value!r} is outside {low:g}..{high:g}"
    if name == "resolution" and number % RESOLUTION_MULTIPLE:
        return None, f"resolution={value!r} is not a multiple of {RESOLUTION_MULTIPLE}"
    return number, None


def parse_hyperparameters(raw: Mapping[str, Any]) -> LoraSettings:
    """Validate SageMaker hyperparameters (strings, or numbers) into :class:`LoraSettings`.

    Missing names take :data:`HYPERPARAMETER_DEFAULTS`; keys starting with ``sagemaker_`` or ``_`` are
    ignored; ``""`` or ``"none"`` for ``base_model_id`` means unset.

    Raises:
        InputError: every problem at once (not a number, out of range, unknown choice, unknown name),
            each naming the hyperparameter and its allowed range.
    """
    known = {f.name for f in fields(LoraSettings)}
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in raw.items():
        if name.startswith(IGNORED_PREFIXES):
            continue
        if name not in known:
            problems.append(f"{name!r} is not a hyperparameter of the LoRA fine-tune "
                            f"(known: {', '.join(sorted(known))})")
            continue
        value = _unquote(value)
        if name in HYPERPARAMETER_LIMITS:
            number, problem = _number(name, value)
            if problem:
                problems.append(problem)
            else:
                values[name] = number
        elif name in HYPERPARAMETER_CHOICES:
            text = str(value).strip().lower()
            if text not in HYPERPARAMETER_CHOICES[name]:
                problems.append(f"{name}={value!r}: use one of {', '.join(HYPERPARAMETER_CHOICES[name])}")
            else:
                values[name] = text
        else:
            text = "" if value is None else str(value).strip()
            values[name] = None if text.lower() in ("", "none", "null") else text
    if problems:
        raise InputError("hyperparameters: " + "; ".join(problems))
    return LoraSettings(**values)
