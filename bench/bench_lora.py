"""Benchmark of the LoRA fine-tune on the tiny random-weight SDXL stand-in: training steps per second and
images per second, each beside a named baseline run in the same process.

The stand-in (``steps.lora.model.build_tiny_sdxl``, ~2 M UNet parameters) tests the machinery, not the
quality: these figures say how much our code adds around diffusers, not how fast a real SDXL trains.

Rows:
- ``baseline: UNet fwd+bwd, no LoRA``: a plain forward and backward of the stand-in UNet (all weights
  trainable, no optimizer, no VAE), on latents of the same size, with the same text conditioning shapes;
- ``ours: LoRA train step``: :func:`steps.lora.loop.train` (VAE encode, noise, UNet with the peft
  adapter, MSE, AdamW, clipping, the metric line), from its second step on;
- ``baseline: pipeline, no LoRA``: ``StableDiffusionXLPipeline`` call on the base (64 px);
- ``ours: pipeline + LoRA``: :func:`steps.lora.model.load_pipeline` with the trained LoRA loaded.

Memory: peak resident set (``resource.getrusage`` ``ru_maxrss``) after each row; it only grows within a
process, so a row's figure includes the rows before it. On CUDA also ``torch.cuda.max_memory_allocated``,
reset before each row.

    .venv/bin/python bench/bench_lora.py [--device cpu|cuda] [--steps 20] [--images 5] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _default_inference_steps() -> int:
    """The local default number of inference steps (``evaluation.diffusers.num_inference_steps``)."""
    try:
        from core.evaluation_config import DiffusersGenerationConfig

        return int(DiffusersGenerationConfig().num_inference_steps)
    except Exception:  # noqa: BLE001 - the benchmark still runs without the evaluation package
        return 30


def _rss_mib() -> float:
    """Peak resident set of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cuda_reset(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _cuda_mib(device: str) -> float | None:
    import torch

    if device != "cuda":
        return None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def _records(folder: Path, count: int):
    """``count`` PIL-made crops (a light figure on noise) as training records."""
    import numpy as np
    from PIL import Image, ImageDraw

    from steps.lora.data import TrainRecord

    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(count):
        image = Image.fromarray(np.random.default_rng(i).integers(40, 200, (80, 96, 3), dtype=np.uint8))
        ImageDraw.Draw(image).ellipse((20 + 4 * i, 10, 70, 76), fill=(236, 232, 220))
        path = folder / f"crop_{i}.png"
        image.save(path)
        records.append(TrainRecord(path, "bunny, a white rabbit in a forest", path.name))
    return records


def bench_baseline_unet(base: Path, device: str, steps: int, resolution: int) -> float:
    """Steps per second of a plain UNet forward+backward (no LoRA, all weights trainable), after a warm-up."""
    import torch
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(base), subfolder="unet").to(device)
    unet.train()
    latent = resolution // 8
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, unet.config.in_channels, latent, latent, generator=g).to(device)
    enc = torch.randn(1, 77, unet.config.cross_attention_dim, generator=g).to(device)
    pooled_dim = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
    added = {"text_embeds": torch.randn(1, pooled_dim, generator=g).to(device),
             "time_ids": torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], device=device,
                                      dtype=torch.float32)}
    t = torch.tensor([500], device=device)

    def step() -> None:
        unet.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(unet(x, t, enc, added_cond_kwargs=added).sample, x)
        loss.backward()

    step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps / (time.perf_counter() - start)


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def bench_lora_training(base: Path, work: Path, device: str, steps: int, resolution: int) -> tuple[float, Path]:
    """Steps per second of :func:`steps.lora.loop.train` from its second step on; returns the LoRA folder."""
    from core.lora_settings import LoraSettings
    from steps.lora.export import save_lora_weights
    from steps.lora.loop import train
    from steps.lora.model import load_components

    records = _records(work / "crops", 5)
    settings = LoraSettings(max_train_steps=steps + 1, resolution=resolution, lora_rank=4, learning_rate=1e-3,
                            checkpointing_steps=100_000, min_records=1)
    comps = load_components(base, device)
    stamps: list[float] = []

    def emit(line: str) -> None:
        if line.startswith("step="):
            _sync(device)
            stamps.append(time.perf_counter())

    train(settings, comps, records, work / "checkpoints", device, "bench", emit=emit)
    lora_dir = work / "lora"
    save_lora_weights(comps.unet, lora_dir)
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]), lora_dir


def bench_generation(base: Path, lora_dir: Path | None, device: str, images: int, steps: int) -> float:
    """Images per second of 64 px generation (``steps`` denoising steps), after one warm-up image."""
    import torch

    from steps.lora.model import load_pipeline

    pipe = load_pipeline(base, lora_dir, device=device, dtype="float32")

    def one(seed: int) -> None:
        pipe("a white rabbit in a forest", generator=torch.Generator().manual_seed(seed), num_inference_steps=steps,
             height=64, width=64, output_type="np")

    one(0)
    _sync(device)
    start = time.perf_counter()
    for seed in range(images):
        one(seed + 1)
    _sync(device)
    return images / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    """Run the four rows, print the table, optionally write ``--out`` JSON; 0 on success, 2 without CUDA."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per row (default 20)")
    parser.add_argument("--images", type=int, default=5, help="timed images per generation row (default 5)")
    parser.add_argument("--inference-steps", type=int, default=_default_inference_steps(),
                        help="denoising steps per image (default: evaluation.diffusers.num_inference_steps)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no GPU", file=sys.stderr)
        return 2
    from steps.lora.model import build_tiny_sdxl

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-lora-") as tmp:
        work = Path(tmp)
        base = build_tiny_sdxl(work / "tiny-sdxl", seed=0)

        def row(name: str, unit: str, fn):
            _cuda_reset(args.device)
            value = fn()
            rate, extra = value if isinstance(value, tuple) else (value, None)
            rows.append({"row": name, "rate": rate, "unit": unit, "peak_rss_mib": _rss_mib(),
                         "cuda_peak_mib": _cuda_mib(args.device)})
            return extra

        row("baseline: UNet fwd+bwd, no LoRA", "steps/s",
            lambda: bench_baseline_unet(base, args.device, args.steps, args.resolution))
        lora_dir = row("ours: LoRA train step", "steps/s",
                       lambda: bench_lora_training(base, work, args.device, args.steps, args.resolution))
        row("baseline: pipeline, no LoRA", "images/s",
            lambda: bench_generation(base, None, args.device, args.images, args.inference_steps))
        row("ours: pipeline + LoRA", "images/s",
            lambda: bench_generation(base, lora_dir, args.device, args.images, args.inference_steps))

    print(f"LoRA benchmark on the tiny random-weight SDXL stand-in (tests the machinery, not the quality); "
          f"device {args.device}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} "
          f"threads), {platform.python_version()}; training at {args.resolution} px, batch 1, "
          f"{args.steps} steps; generation 64 px, {args.inference_steps} steps, {args.images} images")
    print(f"{'row':34} {'rate':>10} {'unit':9} {'peak RSS MiB':>13} {'CUDA peak MiB':>14}")
    for r in rows:
        cuda = f"{r['cuda_peak_mib']:.1f}" if r["cuda_peak_mib"] is not None else "-"
        print(f"{r['row']:34} {r['rate']:10.2f} {r['unit']:9} {r['peak_rss_mib']:13.0f} {cuda:>14}")
    if args.out:
        args.out.write_text(json.dumps({"device": args.device, "args": {k: str(v) for k, v in vars(args).items()},
                                        "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
