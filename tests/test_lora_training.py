"""LoRA fine-tune on the tiny random-weight SDXL stand-in, on the CPU: model loading, artifacts, the
training entry point (outputs, resume, bad input). The stand-in tests the machinery, not the quality."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from core.errors import InputError
from steps.lora.artifacts import read_training_log, unpack_model_artifacts
from steps.lora.model import (
    LORA_WEIGHTS_NAME,
    STAND_IN_MARKER,
    build_tiny_sdxl,
    check_base_model,
    is_stand_in,
    load_pipeline,
)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """The stand-in SDXL folder, built once per session."""
    return build_tiny_sdxl(tmp_path_factory.mktemp("base") / "tiny-sdxl", seed=0)


def _generate(pipe, prompt: str = "a white rabbit in a forest"):
    import torch

    return pipe(prompt, generator=torch.Generator().manual_seed(3), num_inference_steps=4,
                output_type="np").images


def _random_lora(base: Path, out: Path) -> Path:
    """Save a LoRA whose up and down weights are random (non-zero), as the training's export would."""
    import torch

    from steps.lora.export import save_lora_weights
    from steps.lora.model import add_unet_lora, load_components

    comps = load_components(base)
    params = add_unet_lora(comps.unet, rank=4)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in params:
            p.normal_(0.0, 0.3)
    save_lora_weights(comps.unet, out)
    return out


def test_stand_in_is_an_sdxl_folder_built_once(tiny_base):
    info = check_base_model(tiny_base)
    assert info.class_name == "StableDiffusionXLPipeline" and info.stand_in and is_stand_in(tiny_base)
    assert "not the quality" in info.description
    marker = json.loads((tiny_base / STAND_IN_MARKER).read_text())
    assert 1_500_000 < marker["unet_parameters"] < 2_500_000
    stamp = (tiny_base / "unet").stat().st_mtime_ns
    assert build_tiny_sdxl(tiny_base) == tiny_base and (tiny_base / "unet").stat().st_mtime_ns == stamp
    # the tokenizers count a plain caption in words, not bytes, like CLIP's
    tok = load_pipeline(tiny_base).tokenizer
    assert len(tok("a white rabbit standing in the forest").input_ids) <= 12


def test_build_is_deterministic_for_a_seed(tmp_path, tiny_base):
    other = build_tiny_sdxl(tmp_path / "again", seed=0)
    name = "unet/diffusion_pytorch_model.safetensors"
    assert (other / name).read_bytes() == (tiny_base / name).read_bytes()
    assert not is_stand_in(tmp_path)


def test_check_base_model_refuses_other_folders(tmp_path):
    with pytest.raises(InputError, match="no model_index.json"):
        check_base_model(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(InputError, match="StableDiffusionPipeline"):
        check_base_model(tmp_path)
    with pytest.raises(InputError, match="no such folder"):
        check_base_model(tmp_path / "absent")


def test_lora_changes_the_images_for_the_same_seed(tiny_base, tmp_path):
    lora = _random_lora(tiny_base, tmp_path / "lora")
    base_images = _generate(load_pipeline(tiny_base, device="cpu"))
    assert base_images.shape == (1, 64, 64, 3)
    again = _generate(load_pipeline(tiny_base))
    tuned = _generate(load_pipeline(tiny_base, lora, device="cpu"))
    assert abs(base_images - again).max() == 0
    assert abs(base_images - tuned).max() > 1e-3
    with pytest.raises(InputError, match=LORA_WEIGHTS_NAME):
        load_pipeline(tiny_base, tmp_path)


def test_unpack_model_artifacts_and_log(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / LORA_WEIGHTS_NAME).write_bytes(b"x")
    (model / "training_log.jsonl").write_text('{"step": 2, "loss": 0.5}\n{"step": 1, "loss": 0.7}\n')
    archive = tmp_path / "out" / "model.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for f in model.iterdir():
            tar.add(f, arcname=f.name)
    assert unpack_model_artifacts(model, tmp_path / "x") == model
    for source in (archive, archive.parent):
        folder = unpack_model_artifacts(source, tmp_path / "dest")
        assert (folder / LORA_WEIGHTS_NAME).read_bytes() == b"x"
        assert [row["step"] for row in read_training_log(folder)] == [1, 2]
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"y"))
    with pytest.raises((InputError, tarfile.TarError)):
        unpack_model_artifacts(evil, tmp_path / "evil")
    assert not (tmp_path / "escape.txt").exists()
    with pytest.raises(InputError, match="no training log"):
        read_training_log(tmp_path)


# --- the training entry point -------------------------------------------------------------------------------

METRIC = re.compile(r"loss=([0-9.eE+-]+)")  # the pipeline's MetricDefinitions regex (train:loss)
CAPTION = "bunny, a white rabbit standing in the forest, animated film still"
HYPERPARAMETERS = {"max_train_steps": "4", "resolution": "64", "lora_rank": "4", "learning_rate": "1e-3",
                   "checkpointing_steps": "1", "checkpoints_total_limit": "2", "min_records": "4", "seed": "7"}


def _crops(folder: Path, count: int) -> list[Path]:
    """Real-looking crops: a light figure on a textured background, from PIL (varied sizes and colours);
    the same files for the same ``count``."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        noise = np.random.default_rng(i).integers(60, 200, (72 + 5 * i, 90 + 7 * i, 3), dtype=np.uint8)
        image = Image.fromarray(noise)
        draw = ImageDraw.Draw(image)
        draw.rectangle((0, 50, image.width, image.height), fill=(40 + 20 * i, 120, 50))
        draw.ellipse((20 + 3 * i, 12, 62 + 3 * i, 68), fill=(235, 232, 220))
        draw.ellipse((28 + 3 * i, 2, 36 + 3 * i, 26), fill=(235, 232, 220))
        paths.append(folder / f"bunny_{i:03d}.png")
        image.filter(ImageFilter.SMOOTH).save(paths[-1])
    return paths


def _opt_ml(root: Path, base: Path, hyperparameters: dict, captions: list[str] | None = None) -> Path:
    """A SageMaker training layout under ``root``: hyperparameters, train channel (train.jsonl with s3
    refs, crops/, manifest.jsonl), base_model channel (a link to ``base``)."""
    captions = captions or [CAPTION] * 5
    train = root / "input" / "data" / "train"
    crops = _crops(train / "crops", len(captions))
    rows = [{"image-ref": f"s3://bucket/run/crops/{p.name}", "caption": c} for p, c in zip(crops, captions)]
    (train / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (train / "manifest.jsonl").write_text("".join(
        json.dumps({"image_ref": r["image-ref"], "alt_text": r["caption"], "character": "bunny"}) + "\n"
        for r in rows))
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (root / "input" / "data" / "base_model").symlink_to(base, target_is_directory=True)
    return root


def _train(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "STORYBOARD_OPT_ML": str(root)}
    return subprocess.run([sys.executable, "-m", "containers.training.train_lora"], env=env, capture_output=True,
                          text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])


def _losses(stdout: str) -> list[float]:
    return [float(m.group(1)) for line in stdout.splitlines() if line.startswith("step=")
            for m in [METRIC.search(line)]]


@pytest.fixture(scope="module")
def full_run(tiny_base, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """An uninterrupted 4-step run; one caption is over 77 tokens (policy truncate)."""
    long_caption = CAPTION + ", " + ", ".join(["a white rabbit with long ears"] * 14)
    root = _opt_ml(tmp_path_factory.mktemp("full"), tiny_base, HYPERPARAMETERS, [CAPTION] * 4 + [long_caption])
    return root, _train(root)


def test_entry_point_trains_and_writes_the_model(full_run):
    from safetensors import safe_open

    root, proc = full_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = root / "model"
    assert {p.name for p in model.iterdir()} >= {LORA_WEIGHTS_NAME, "training_config.json", "training_log.jsonl",
                                                 "README.md"}
    with safe_open(str(model / LORA_WEIGHTS_NAME), framework="pt") as weights:
        keys = list(weights.keys())
    assert keys and all(k.startswith("unet.") and (".lora.down." in k or ".lora.up." in k) for k in keys)
    assert {k.split(".lora.")[0].rsplit(".", 1)[-1] for k in keys} <= {"to_k", "to_q", "to_v", "0"}
    losses = _losses(proc.stdout)
    assert len(losses) == 4 and all(x > 0 for x in losses)
    assert [line.split()[0] for line in proc.stdout.splitlines() if line.startswith("step=")] == \
        ["step=1", "step=2", "step=3", "step=4"]
    assert sorted(p.name for p in (root / "checkpoints").iterdir()) == ["checkpoint-3", "checkpoint-4"]
    log = read_training_log(model)
    assert [r["step"] for r in log] == [1, 2, 3, 4] and [r["loss"] for r in log] == pytest.approx(losses, rel=1e-5)
    assert all(r["lr"] == pytest.approx(1e-3) and r["elapsed_s"] >= 0 for r in log)
    config = json.loads((model / "training_config.json").read_text())
    assert config["base_model"]["stand_in"] is True and config["hyperparameters"]["lora_rank"] == 4
    assert config["dataset"]["records"] == 5 and config["dataset"]["characters"] == ["bunny"]
    assert config["dataset"]["truncated_captions"] == 1 and "truncated" in proc.stderr
    card = (model / "README.md").read_text()
    assert "Stand-in base model" in card and "not the quality" in card
    assert not (root / "output" / "failure").exists()


def test_resume_continues_the_same_trajectory(full_run, tiny_base, tmp_path):
    from safetensors.torch import load_file

    full_root, full = full_run
    root = _opt_ml(tmp_path, tiny_base, {**HYPERPARAMETERS, "max_train_steps": "2"},
                   [CAPTION] * 4 + [json.loads(line)["caption"] for line in
                                    (full_root / "input/data/train/train.jsonl").read_text().splitlines()[4:]])
    first = _train(root)
    assert first.returncode == 0, first.stderr[-3000:]
    assert _losses(first.stdout) == _losses(full.stdout)[:2]
    (root / "input/config/hyperparameters.json").write_text(json.dumps(HYPERPARAMETERS))
    second = _train(root)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stdout and "checkpoint-2" in second.stdout
    assert second.stdout.count("step=") == 2 and _losses(second.stdout) == _losses(full.stdout)[2:]
    assert [r["step"] for r in read_training_log(root / "model")] == [1, 2, 3, 4]
    a = load_file(str(root / "model" / LORA_WEIGHTS_NAME))
    b = load_file(str(full_root / "model" / LORA_WEIGHTS_NAME))
    assert a.keys() == b.keys() and all(torch_equal(a[k], b[k]) for k in a)


def torch_equal(x, y) -> bool:
    import torch

    return bool(torch.equal(x, y))


def test_trained_lora_loads_and_changes_generation(full_run, tiny_base):
    tuned = _generate(load_pipeline(tiny_base, full_run[0] / "model"))
    assert abs(tuned - _generate(load_pipeline(tiny_base))).max() > 0


# --- bad input: exit 2, one error line, the failure file, no training ---------------------------------------


def _bad_run(root: Path, monkeypatch, capsys) -> str:
    from containers.training.train_lora import run

    monkeypatch.setenv("STORYBOARD_OPT_ML", str(root))
    assert run() == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    assert (root / "output" / "failure").read_text().startswith("InputError: ")
    assert not (root / "model").exists() and not (root / "checkpoints").exists()
    return errors[0]


def test_bad_base_models_are_refused(tmp_path, tiny_base, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    root = _opt_ml(tmp_path / "a", empty, HYPERPARAMETERS)
    assert "no model_index.json" in _bad_run(root, monkeypatch, capsys)
    sd15 = tmp_path / "sd15"
    sd15.mkdir()
    (sd15 / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    root = _opt_ml(tmp_path / "b", sd15, HYPERPARAMETERS)
    assert "StableDiffusionPipeline" in _bad_run(root, monkeypatch, capsys)


@pytest.mark.parametrize("name, value, expected", [
    ("learning_rate", "0.5", "outside"), ("max_train_steps", "many", "not a number"),
    ("resolution", "100", "multiple of 8"), ("lora_rank", "2.5", "whole number"),
    ("caption_token_policy", "shorten", "truncate, refuse"), ("learnig_rate", "1e-4", "not a hyperparameter"),
])
def test_bad_hyperparameters_are_refused(tmp_path, tiny_base, monkeypatch, capsys, name, value, expected):
    root = _opt_ml(tmp_path, tiny_base, {**HYPERPARAMETERS, name: value}, [CAPTION])
    message = _bad_run(root, monkeypatch, capsys)
    assert name in message and expected in message


def test_too_few_records_and_refused_captions(tmp_path, tiny_base, monkeypatch, capsys):
    root = _opt_ml(tmp_path / "few", tiny_base, {**HYPERPARAMETERS, "min_records": "6"})
    assert "fewer than min_records=6" in _bad_run(root, monkeypatch, capsys)
    long_caption = " ".join(["rabbit"] * 80)
    root = _opt_ml(tmp_path / "long", tiny_base, {**HYPERPARAMETERS, "caption_token_policy": "refuse"},
                   [CAPTION] * 4 + [long_caption])
    message = _bad_run(root, monkeypatch, capsys)
    assert "caption_token_policy=refuse" in message and "bunny_004.png (82 tokens)" in message


def test_exit_status_of_the_process_on_bad_input(tmp_path, tiny_base):
    root = _opt_ml(tmp_path, tiny_base, {**HYPERPARAMETERS, "learning_rate": "abc"})
    proc = _train(root)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: hyperparameters:")
    assert "learning_rate" in (root / "output" / "failure").read_text()


def test_settings_defaults_and_limits():
    from core.lora_settings import HYPERPARAMETER_LIMITS, parse_hyperparameters

    settings = parse_hyperparameters({"sagemaker_program": "x", "seed": '"7"', "mixed_precision": "BF16"})
    assert settings.seed == 7 and settings.mixed_precision == "bf16" and settings.max_train_steps == 500
    assert settings.resolution == 1024 and settings.caption_token_policy == "truncate"
    assert HYPERPARAMETER_LIMITS["learning_rate"] == (1e-7, 1e-2)
    assert parse_hyperparameters({"learning_rate": "1e-2", "seed": "4294967295"}).learning_rate == 1e-2
