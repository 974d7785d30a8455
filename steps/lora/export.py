"""What the training job leaves in ``/opt/ml/model`` (SageMaker tars it into ``model.tar.gz``).

- ``pytorch_lora_weights.safetensors``: the UNet LoRA in diffusers format (keys ``unet.…lora.down/up``),
  loadable with ``StableDiffusionXLPipeline.load_lora_weights(folder)``;
- ``training_config.json``: hyperparameters, base model, dataset summary, result;
- ``training_log.jsonl``: one line per logged step (``step``, ``loss``, ``lr``, ``elapsed_s``);
- ``README.md``: the model card (with the stand-in warning when the base is the random-weight stand-in).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.io import write_json, write_jsonl, write_text
from steps.lora.model import LORA_WEIGHTS_NAME

if TYPE_CHECKING:
    from core.lora_settings import LoraSettings
    from steps.lora.model import BaseModelInfo

TRAINING_CONFIG = "training_config.json"
TRAINING_LOG = "training_log.jsonl"
MODEL_CARD = "README.md"


def lora_state_dict(unet: Any) -> dict[str, Any]:
    """The UNet adapter's weights in diffusers' key format (``…attn1.to_q.lora.down.weight``), float32."""
    import torch
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    return {key: value.detach().to("cpu", torch.float32).contiguous() for key, value in state.items()}


def save_lora_weights(unet: Any, out_dir: str | Path) -> Path:
    """Save the UNet LoRA with ``StableDiffusionXLPipeline.save_lora_weights``; return the safetensors path."""
    from diffusers import StableDiffusionXLPipeline

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    StableDiffusionXLPipeline.save_lora_weights(str(out_dir), unet_lora_layers=lora_state_dict(unet),
                                                weight_name=LORA_WEIGHTS_NAME, safe_serialization=True)
    return out_dir / LORA_WEIGHTS_NAME


def write_training_outputs(out_dir: str | Path, settings: LoraSettings, base: BaseModelInfo,
                           dataset: Mapping[str, Any], log_rows: Sequence[Mapping[str, Any]],
                           result: Mapping[str, Any]) -> dict[str, Path]:
    """Write ``training_config.json``, ``training_log.jsonl`` and ``README.md`` atomically into ``out_dir``.

    ``dataset``: ``records``, ``characters``, ``truncated_captions``, ``manifest``; ``result``: ``steps``,
    ``final_loss``, ``resumed_from``, ``device``, ``elapsed_s``, ``lora_parameters``.
    """
    out_dir = Path(out_dir)
    config = {"hyperparameters": settings.to_json(), "base_model": base.to_json(), "dataset": dict(dataset),
              "result": dict(result), "lora": {"target_modules": ["to_k", "to_q", "to_v", "to_out.0"],
                                               "rank": settings.lora_rank, "alpha": settings.lora_rank,
                                               "weights": LORA_WEIGHTS_NAME, "text_encoders_trained": False}}
    paths = {"config": write_json(out_dir / TRAINING_CONFIG, config)}
    write_jsonl(out_dir / TRAINING_LOG, log_rows)
    paths["log"] = out_dir / TRAINING_LOG
    paths["card"] = write_text(out_dir / MODEL_CARD, model_card(settings, base, dataset, result))
    return paths


def model_card(settings: LoraSettings, base: BaseModelInfo, dataset: Mapping[str, Any],
               result: Mapping[str, Any]) -> str:
    """The model card (Markdown with Hub-style front matter)."""
    loss = result.get("final_loss")
    loss_text = f"{loss:.6g}" if isinstance(loss, (int, float)) else "n/a"
    characters = ", ".join(dataset.get("characters") or []) or "not recorded"
    warning = ""
    if base.stand_in:
        warning = ("\n> **Stand-in base model.** This LoRA was trained on a tiny random-weight model with the "
                   "Stable Diffusion XL architecture, built offline from configuration. It tests the "
                   "machinery, not the quality: its images are noise and its figures say nothing about "
                   "a real fine-tune.\n")
    hp = "\n".join(f"| `{k}` | `{v}` |" for k, v in settings.to_json().items())
    # The Hub's base_model field wants a model ID: the configured base_model_id names the real base (the
    # channel's folder name is always "base_model"); the stand-in has none.
    name = "none (random-weight stand-in)" if base.stand_in else (settings.base_model_id or base.path.name)
    front_base = "" if base.stand_in else f"base_model: {name}\n"
    return f"""---
library_name: diffusers
{front_base}license: {'other' if base.stand_in else 'openrail++'}
tags: [stable-diffusion-xl, lora, text-to-image, storyboard]
---

# storyboard character LoRA
{warning}
A LoRA adapter (rank {settings.lora_rank}) on the UNet attention projections (`to_k`, `to_q`, `to_v`,
`to_out.0`) of {base.description}. The text encoders are frozen.

- Base model: {name} (`{base.path}`, {base.class_name}); licence: {base.license}. The adapter inherits the
  base model's licence terms: a CreativeML Open RAIL++-M base passes its use-based restrictions on to it.
- Data: {dataset.get('records', 0)} image-caption records from `{dataset.get('manifest', '?')}`; characters:
  {characters}; captions truncated to 77 CLIP tokens: {dataset.get('truncated_captions', 0)}.
- Training: {result.get('steps', 0)} steps at {settings.resolution} px, final loss {loss_text}
  (noise-prediction MSE), device {result.get('device', '?')}.

## Use

```python
from diffusers import StableDiffusionXLPipeline
pipe = StableDiffusionXLPipeline.from_pretrained("<base model folder>")
pipe.load_lora_weights("<this folder>", weight_name="{LORA_WEIGHTS_NAME}")
```

## Hyperparameters

| name | value |
|---|---|
{hp}
"""
