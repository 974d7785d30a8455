"""The LoRA training loop (SDXL UNet only), after diffusers' ``train_text_to_image_lora_sdxl.py``.

Per optimizer step: ``gradient_accumulation_steps`` micro-batches of ``train_batch_size`` images; each is
VAE-encoded (latent sample x scaling factor), noised at a uniform random DDPM timestep, and the UNet
predicts the noise (or the velocity, by the scheduler's ``prediction_type``) from the caption's
concatenated CLIP hidden states (penultimate layers), the pooled ``text_encoder_2`` embedding and
``add_time_ids`` = original size + crop top-left + target size. Loss: MSE. AdamW on the LoRA weights
(float32), gradient norm clipped at 1, ``constant`` or ``cosine`` schedule after a linear warm-up.

Determinism and resume: the data order of an epoch comes from ``seed + epoch``, and each micro-batch's
VAE sample, noise and timesteps from a generator seeded by ``(seed, micro-batch number)``, so a run
resumed from ``checkpoint-<n>`` (LoRA weights, optimizer, schedule, log) repeats the uninterrupted run's
losses. Text embeddings are computed once per record, before the loop.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.io import write_json
from core.lora_settings import ADAM_BETAS, ADAM_EPSILON, ADAM_WEIGHT_DECAY, MAX_GRAD_NORM, LoraSettings
from steps.lora.data import ImageCaptionDataset, TrainRecord, tokenize
from steps.lora.model import Components, add_unet_lora

log = logging.getLogger(__name__)
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
CHECKPOINT_STATE = "state.json"
CHECKPOINT_LORA = "lora.safetensors"


@dataclass
class TrainResult:
    """What a training run produced (the adapter stays in ``Components.unet``)."""

    steps: int
    final_loss: float | None
    log_rows: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None
    device: str = "cpu"
    elapsed_s: float = 0.0
    lora_parameters: int = 0


def metric_line(step: int, loss: float, lr: float) -> str:
    """``step=<n> loss=<float> lr=<float>``: the pipeline's metric regex ``loss=([0-9.eE+-]+)`` reads it."""
    return f"step={step} loss={loss:.6g} lr={lr:.6g}"


# --- checkpoints --------------------------------------------------------------------------------------------


def list_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (with ``state.json``) under ``folder`` as ``(step, path)``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if (m := CHECKPOINT_PATTERN.match(p.name)) and (p / CHECKPOINT_STATE).is_file()]
    return sorted(found)


def check_resumable(folder: str | Path, settings: LoraSettings, data_digest: str) -> dict[str, Any] | None:
    """The latest checkpoint's state, after checking it belongs to this trajectory; None without one.

    Cheap (reads ``state.json``), so the entry point calls it before loading any model.

    Raises:
        InputError: the checkpoint was made with other trajectory settings or other records, or is past
            ``max_train_steps``.
    """
    found = list_checkpoints(folder)
    if not found:
        return None
    step, path = found[-1]
    state = json.loads((path / CHECKPOINT_STATE).read_text(encoding="utf-8"))
    if step > settings.max_train_steps:
        raise InputError(f"checkpoint {path} is past max_train_steps={settings.max_train_steps}; raise "
                         "max_train_steps or use another checkpoint location")
    mine = settings.trajectory_key()
    differ = [f"{k}: {state['trajectory'].get(k)!r} there, {v!r} now" for k, v in mine.items()
              if state["trajectory"].get(k) != v]
    if differ:
        raise InputError(f"checkpoint {path} was made with other hyperparameters ({'; '.join(differ)}); use "
                         "the same values to resume, or another checkpoint location to start afresh")
    if state.get("data_digest") != data_digest:
        raise InputError(f"checkpoint {path} was made from other training records; use another checkpoint "
                         "location to train on this data")
    state["path"] = str(path)
    return state


def _save_checkpoint(folder: Path, step: int, unet: Any, optimizer: Any, scheduler: Any, scaler: Any,
                     state: dict[str, Any], limit: int) -> Path:
    """Write ``checkpoint-<step>`` (temporary folder, then renamed), then prune to the newest ``limit``."""
    import torch
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"checkpoint-{step}"
    tmp = folder / f".checkpoint-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    weights = {k: v.detach().to("cpu").contiguous() for k, v in get_peft_model_state_dict(unet).items()}
    save_file(weights, str(tmp / CHECKPOINT_LORA))
    torch.save({"optimizer": optimizer.state_dict(), "lr_scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None}, tmp / "training_state.pt")
    write_json(tmp / CHECKPOINT_STATE, state)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for _, old in list_checkpoints(folder)[:-limit]:
        shutil.rmtree(old, ignore_errors=True)
        log.info("removed old checkpoint %s (checkpoints_total_limit=%d)", old.name, limit)
    return final


def _load_checkpoint(path: Path, unet: Any, optimizer: Any, scheduler: Any, scaler: Any) -> None:
    """Restore the adapter weights, optimizer, learning-rate schedule (and loss scaler) of a checkpoint."""
    import torch
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(unet, load_file(str(path / CHECKPOINT_LORA)))
    if getattr(result, "unexpected_keys", None):
        raise InputError(f"checkpoint {path}: LoRA keys that do not fit this model ({result.unexpected_keys[:3]})")
    blob = torch.load(path / "training_state.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["lr_scheduler"])
    if scaler is not None and blob.get("scaler"):
        scaler.load_state_dict(blob["scaler"])


# --- the step -------------------------------------------------------------------------------------------------


def encode_captions(comps: Components, captions: Sequence[str], device: str) -> tuple[Any, Any]:
    """Caption embeddings once per record: ``(N, 77, d1 + d2)`` penultimate hidden states of both encoders,
    concatenated, and ``(N, p)`` pooled (projected) ``text_encoder_2`` output (diffusers' ``encode_prompt``)."""
    import torch

    hidden, pooled = [], None
    with torch.no_grad():
        for tokenizer, encoder in ((comps.tokenizer, comps.text_encoder), (comps.tokenizer_2, comps.text_encoder_2)):
            out = encoder(tokenize(captions, tokenizer).to(device), output_hidden_states=True)
            pooled = out[0]
            hidden.append(out.hidden_states[-2])
    return torch.cat(hidden, dim=-1), pooled


def _batch_indices(micro: int, n: int, batch: int, seed: int) -> list[int]:
    """Record indices of micro-batch ``micro``: epoch ``micro // ceil(n / batch)`` is a permutation seeded
    by ``seed + epoch``; its last batch may be short."""
    import torch

    per_epoch = math.ceil(n / batch)
    epoch, j = divmod(micro, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    return order[j * batch:(j + 1) * batch]


def _micro_loss(comps: Components, dataset: ImageCaptionDataset, indices: list[int], embeds: Any, pooled: Any,
                generator: Any, device: str, weight_dtype: Any, autocast: bool) -> Any:
    """The noise-prediction MSE of one micro-batch (a scalar tensor with a graph to the LoRA weights)."""
    import torch
    import torch.nn.functional as F
    from diffusers.utils.torch_utils import randn_tensor

    items = [dataset[i] for i in indices]
    pixels = torch.stack([it["pixel_values"] for it in items]).to(device, torch.float32)
    res = dataset.resolution
    time_ids = torch.tensor([[*it["original_size"], *it["crop_top_left"], res, res] for it in items],
                            device=device, dtype=weight_dtype)
    vae, scheduler = comps.vae, comps.noise_scheduler
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.sample(generator=generator)
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is not None and std is not None:
        mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
        latents = (latents - mean_t) * vae.config.scaling_factor / std_t
    else:
        latents = latents * vae.config.scaling_factor
    latents = latents.to(weight_dtype)
    noise = randn_tensor(latents.shape, generator=generator, device=torch.device(device), dtype=latents.dtype)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(items),), generator=generator)
    timesteps = timesteps.to(device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    target = noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(latents, noise,
                                                                                                  timesteps)
    index = torch.tensor(indices, device=device)
    with torch.autocast(device_type="cuda", dtype=weight_dtype, enabled=autocast):
        pred = comps.unet(noisy, timesteps, embeds[index],
                          added_cond_kwargs={"text_embeds": pooled[index], "time_ids": time_ids}).sample
    return F.mse_loss(pred.float(), target.float(), reduction="mean")


def train(settings: LoraSettings, comps: Components, records: Sequence[TrainRecord], checkpoints_dir: str | Path,
          device: str, data_digest: str, weight_dtype: Any = None,
          emit: Callable[[str], None] = print) -> TrainResult:
    """Add the adapter to ``comps.unet`` and train it for ``settings.max_train_steps`` optimizer steps.

    Resumes from the newest complete checkpoint under ``checkpoints_dir`` (checked with
    :func:`check_resumable`); saves one every ``checkpointing_steps`` and at the last step, keeping the
    newest ``checkpoints_total_limit``. ``emit`` receives a :func:`metric_line` per logged step.
    """
    import torch
    from diffusers.optimization import get_scheduler

    weight_dtype = weight_dtype or torch.float32
    checkpoints_dir = Path(checkpoints_dir)
    resume = check_resumable(checkpoints_dir, settings, data_digest)
    torch.manual_seed(settings.seed)  # the adapter's initial (gaussian) weights
    params = add_unet_lora(comps.unet, settings.lora_rank)
    comps.unet.train()
    embeds, pooled = encode_captions(comps, [r.caption for r in records], device)
    embeds, pooled = embeds.to(weight_dtype), pooled.to(weight_dtype)
    dataset = ImageCaptionDataset(records, settings.resolution)
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, betas=ADAM_BETAS,
                                  weight_decay=ADAM_WEIGHT_DECAY, eps=ADAM_EPSILON)
    name = "cosine" if settings.lr_scheduler == "cosine" else "constant_with_warmup"
    lr_scheduler = get_scheduler(name, optimizer, num_warmup_steps=settings.lr_warmup_steps,
                                 num_training_steps=settings.max_train_steps)
    autocast = weight_dtype != torch.float32 and device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda") if weight_dtype == torch.float16 and autocast else None
    rows: list[dict[str, Any]] = []
    start, offset = 0, 0.0
    if resume is not None:
        _load_checkpoint(Path(resume["path"]), comps.unet, optimizer, lr_scheduler, scaler)
        start, offset, rows = int(resume["step"]), float(resume.get("elapsed_s", 0.0)), list(resume["log"])
        emit(f"resumed from {resume['path']} at step {start}")
    started = time.monotonic()
    accum, n = settings.gradient_accumulation_steps, len(records)
    step_loss = rows[-1]["loss"] if rows else None
    for step in range(start, settings.max_train_steps):
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for k in range(accum):
            micro = step * accum + k
            generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + micro)
            indices = _batch_indices(micro, n, settings.train_batch_size, settings.seed)
            loss = _micro_loss(comps, dataset, indices, embeds, pooled, generator, device, weight_dtype, autocast)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at step {step + 1}; lower learning_rate or "
                                         "use mixed_precision=no/bf16")
            total += loss.item()
            (scaler.scale(loss / accum) if scaler else loss / accum).backward()
        if scaler:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        lr_scheduler.step()
        done, step_loss = step + 1, total / accum
        lr = lr_scheduler.get_last_lr()[0]
        elapsed = offset + time.monotonic() - started
        if done % settings.log_every == 0 or done == settings.max_train_steps:
            rows.append({"step": done, "loss": step_loss, "lr": lr, "elapsed_s": round(elapsed, 3)})
            emit(metric_line(done, step_loss, lr))
        if done % settings.checkpointing_steps == 0 or done == settings.max_train_steps:
            state = {"step": done, "trajectory": settings.trajectory_key(), "data_digest": data_digest,
                     "elapsed_s": elapsed, "log": rows}
            path = _save_checkpoint(checkpoints_dir, done, comps.unet, optimizer, lr_scheduler, scaler, state,
                                    settings.checkpoints_total_limit)
            log.info("saved %s", path)
    comps.unet.eval()
    return TrainResult(steps=max(start, settings.max_train_steps), final_loss=step_loss, log_rows=rows,
                       resumed_from=start if resume is not None else None, device=device,
                       elapsed_s=round(offset + time.monotonic() - started, 3),
                       lora_parameters=sum(p.numel() for p in params))
