"""Paths and small helpers shared by the tests (imported by basename: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "media"


def characters_dir(tmp: Path, media: Path, *names: str) -> Path:
    """A ``--characters`` folder holding copies of the shared references of ``names``."""
    root = tmp / "characters"
    for name in names:
        shutil.copytree(media / "references" / name, root / name)
    return root


def write_random_lora(base: Path, folder: Path, seed: int = 0, rank: int = 4) -> Path:
    """Save nonzero random LoRA weights (diffusers format) for the UNet of the diffusers model ``base`` into
    ``folder`` (``pytorch_lora_weights.safetensors``), as a trained adapter would be saved; return ``folder``.

    A freshly initialised LoRA is zero in its up projection and changes nothing; random weights make base and
    base + LoRA differ, which is what the generation and serving tests need.
    """
    import torch
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(str(base), subfolder="unet")
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionXLPipeline.save_lora_weights(str(folder), unet_lora_layers=state)
    return folder


def fake_gate(args: list[str], *, similarity: float, improvement: float | None, base: float | None,
              near_copy_rate: float | None) -> dict:
    """The gate block the real Evaluate step writes: the real decision, with the thresholds from its arguments
    (``--min-character-similarity=X`` and so on), for tests whose fake Evaluate writes evaluation.json."""
    from evaluation.evaluate import decide_gate

    options = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
    return decide_gate(character_similarity=similarity, improvement=improvement, base_similarity=base,
                       near_copy_rate=near_copy_rate,
                       min_character_similarity=float(options["min-character-similarity"]),
                       min_improvement=float(options["min-improvement"]),
                       max_near_copy_rate=float(options["max-near-copy-rate"]))
