"""The sagemaker backend's Evaluate: SDXL base and base+LoRA on the same seeds, through diffusers, on the tiny
random-weight stand-in (steps.lora.model.build_tiny_sdxl) and a LoRA artifact holding a random nonzero LoRA
state, a training log and a training config, tarred as the training job's model.tar.gz. The stand-in tests
the machinery, not the quality: nothing here judges how the images look."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from storyboard_testutil import MEDIA, write_random_lora

from core.errors import InputError
from core.evaluation_config import EvaluationConfig
from evaluation.diffusers_generator import STAND_IN_WARNING, DiffusersGenerator, image_generators, training_summary
from evaluation.generation import GENERATION_LOG, generate_prompt_set, read_generation_log
from evaluation.prompt_set import RequestValidationError, build_requests

REFERENCES = MEDIA / "references"
SETTINGS = {"prompt_templates": ["{name} on a storyboard frame, wide shot"], "seeds": [3, 11],
            "images_per_prompt": 2, "bootstrap_samples": 100,
            "diffusers": {"width": 64, "height": 64, "num_inference_steps": 2, "guidance_scale": 5.0}}
TRAINING_LOG = [{"step": s, "loss": round(0.5 / s + 0.01 * (s % 3), 6), "lr": 1e-4, "elapsed_s": 0.5 * s}
                for s in range(1, 13)]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    from steps.lora.model import build_tiny_sdxl

    return build_tiny_sdxl(tmp_path_factory.mktemp("base") / "tiny-sdxl", seed=0)


@pytest.fixture(scope="module")
def lora_archive(tmp_path_factory, tiny_base) -> Path:
    """``model.tar.gz`` as the training job leaves it: nonzero random LoRA weights (diffusers format) on the
    UNet attention projections, training_log.jsonl, training_config.json and a README."""
    folder = write_random_lora(tiny_base, tmp_path_factory.mktemp("artifact") / "model", seed=0)
    (folder / "training_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TRAINING_LOG))
    (folder / "training_config.json").write_text(json.dumps(
        {"hyperparameters": {"max_train_steps": 12}, "base_model": {"stand_in": True}}))
    (folder / "README.md").write_text("# LoRA (test)\n")
    archive = folder.parent / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)
    return archive


@pytest.fixture(scope="module")
def lora_dir(lora_archive, tmp_path_factory) -> Path:
    from steps.lora.artifacts import unpack_model_artifacts

    return unpack_model_artifacts(lora_archive, tmp_path_factory.mktemp("unpacked") / "model")


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_diffusers_requests_are_checked_against_diffusers_limits_not_nova_canvas():
    config = EvaluationConfig(**SETTINGS)
    requests = build_requests(config, ["sintel"], backend="diffusers")
    assert [(r.width, r.height, r.num_inference_steps, r.cfg_scale, r.limits) for r in requests] == \
        [(64, 64, 2, 5.0, "diffusers")] * 2  # 64 px is below Nova Canvas's 320 px and still accepted
    assert requests[0].to_json()["num_inference_steps"] == 2
    with pytest.raises(RequestValidationError, match="no Nova Canvas TEXT_IMAGE body"):
        requests[0].body()
    nova = build_requests(config, ["sintel"])  # the Nova Canvas requests are unchanged
    assert nova[0].limits == "nova-canvas" and nova[0].width == 1024 and "num_inference_steps" not in nova[0].to_json()
    for key, value, message in (("width", 100, "multiple of 8"), ("height", 4096, "diffusers.height"),
                                ("num_inference_steps", 0, "diffusers.num_inference_steps"),
                                ("guidance_scale", 31.0, "less than or equal")):
        with pytest.raises(ValueError, match=message):
            EvaluationConfig(**{**SETTINGS, "diffusers": {**SETTINGS["diffusers"], key: value}})
    from dataclasses import replace

    with pytest.raises(RequestValidationError, match="multiple of 8"):
        replace(requests[0], width=100).validate()
    with pytest.raises(RequestValidationError, match="num_inference_steps"):
        replace(requests[0], num_inference_steps=0).validate()


def test_each_image_has_its_own_generator_seeded_with_seed_plus_index():
    import torch

    first, second = image_generators(7, 2)
    assert torch.equal(torch.randn(4, generator=first), torch.randn(4, generator=torch.Generator().manual_seed(7)))
    assert torch.equal(torch.randn(4, generator=second), torch.randn(4, generator=torch.Generator().manual_seed(8)))
    with pytest.raises(ValueError):
        image_generators(-1, 1)


def test_base_and_finetuned_generate_the_same_seeds_deterministically_and_differ(tiny_base, lora_dir, tmp_path):
    config = EvaluationConfig(**SETTINGS)
    requests = build_requests(config, ["sintel"], backend="diffusers")
    base = DiffusersGenerator(tiny_base, device="cpu")
    finetuned = DiffusersGenerator(tiny_base, lora_dir, device="cpu")
    assert base.base_info.stand_in and "LoRA" in finetuned.model_id
    runs = {"base": generate_prompt_set(base, requests, tmp_path / "base"),
            "again": generate_prompt_set(base, requests, tmp_path / "again"),
            "finetuned": generate_prompt_set(finetuned, requests, tmp_path / "finetuned", progress=True)}
    assert base._pipeline is not None and base.pipeline is base._pipeline  # loaded once, kept
    names = [f"sintel/sintel_p0_s{seed}_{i}.png" for seed in (3, 11) for i in (0, 1)]
    for label, result in runs.items():
        assert result.counts == {"ok": 2} and result.images == 4
        written = read_generation_log(tmp_path / label)
        assert written["generator"] == "diffusers" and written["model_id"] == result.model_id
        assert [f for r in written["records"] for f in r["files"]] == names
        assert all(r["num_inference_steps"] == 2 and r["width"] == 64 for r in written["records"])
        assert (tmp_path / label / GENERATION_LOG).is_file()
    for name in names:
        b, again, ft = (_pixels(tmp_path / label / name) for label in ("base", "again", "finetuned"))
        assert b.shape == (64, 64, 3)
        assert np.array_equal(b, again), f"{name}: the base model is not deterministic for a seed"
        assert np.abs(b - ft).mean() > 1.0, f"{name}: the LoRA does not change the image"
    assert not np.array_equal(_pixels(tmp_path / "base" / names[0]), _pixels(tmp_path / "base" / names[1]))
    # Image 1 of seed 3 is image 0 of seed 4 (one generator per image, seeded with seed + index), up to the
    # rounding differences of a batch of 1 against a batch of 2; seed 5 starts from other noise.
    from dataclasses import replace

    batch = _pixels(tmp_path / "base" / "sintel/sintel_p0_s3_1.png")
    for seed, same in ((4, True), (5, False)):
        single = base.generate(replace(requests[0], seed=seed, number_of_images=1))
        with Image.open(io.BytesIO(single.images[0])) as image:
            gap = np.abs(np.asarray(image.convert("RGB"), dtype=np.int16) - batch).max()
        assert (gap <= 2) == same, f"seed {seed}: largest pixel difference {gap}"


def test_generator_refuses_unusable_models_before_loading(tiny_base, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="model_index.json"):
        DiffusersGenerator(tmp_path / "empty")
    with pytest.raises(InputError, match="pytorch_lora_weights.safetensors"):
        DiffusersGenerator(tiny_base, tmp_path / "empty")
    nova_request = build_requests(EvaluationConfig(), ["sintel"])[0]
    with pytest.raises(InputError, match="backend='diffusers'"):
        DiffusersGenerator(tiny_base, device="cpu", pipeline=object()).generate(nova_request)


def test_training_summary_reads_the_log():
    summary = training_summary(TRAINING_LOG, {"hyperparameters": {"max_train_steps": "12"}})
    assert summary["steps"] == 12 and summary["max_train_steps"] == 12 and summary["logged_steps"] == 12
    assert summary["first_loss"] == TRAINING_LOG[0]["loss"] and summary["final_loss"] == TRAINING_LOG[-1]["loss"]
    assert summary["final_loss_smoothed"] == pytest.approx(np.mean([r["loss"] for r in TRAINING_LOG[-10:]]), abs=1e-6)
    assert training_summary([]) is None


# ----- the Evaluate entry point with --finetune-backend sagemaker ----------------------------------------


def _root(tmp_path: Path, tiny_base: Path | None, archive: Path | None) -> Path:
    root = tmp_path / "root"
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "pipeline.json").write_text(json.dumps({"evaluation": SETTINGS}))
    if REFERENCES.is_dir():
        shutil.copytree(REFERENCES, root / "input" / "references")
    else:
        (root / "input" / "references" / "sintel").mkdir(parents=True)
    if tiny_base is not None:
        shutil.copytree(tiny_base, root / "input" / "base_model")
    if archive is not None:
        (root / "input" / "model").mkdir(parents=True)
        shutil.copy(archive, root / "input" / "model" / "model.tar.gz")
    return root


def test_evaluate_entry_point_scores_base_and_lora_on_the_stand_in(media, tiny_base, lora_archive, tmp_path, capsys):
    from containers.processing import evaluate
    from evaluation.schema import validate_evaluation

    root = _root(tmp_path, tiny_base, lora_archive)
    assert evaluate.main(["--processing-root", str(root), "--finetune-backend", "sagemaker", "--device", "cpu",
                          "--model-data-url", "s3://bucket/job/output/model.tar.gz"]) == 0
    out = root / "output" / "evaluation"
    document = json.loads((out / "evaluation.json").read_text())
    validate_evaluation(document)
    cs = document["metrics"]["character_similarity"]
    assert isinstance(cs["finetuned"]["mean"], float) and isinstance(cs["base"]["mean"], float)
    assert isinstance(cs["improvement"], float)
    assert document["characters"] == ["bunny", "sintel"]
    assert document["models"]["base"]["images"] == document["models"]["finetuned"]["images"] == 8
    assert document["models"]["finetuned"]["generation"]["model_id"].endswith("LoRA " + str(root / "work" / "model"))
    model = document["model"]
    assert model["backend"] == "sagemaker" and model["stand_in"] is True
    assert model["lora"]["artifact"] == "s3://bucket/job/output/model.tar.gz"
    assert model["training"]["steps"] == 12 and model["training"]["final_loss"] == TRAINING_LOG[-1]["loss"]
    assert model["training"]["loss_curve"] == "loss_curve.png"
    assert document["warnings"][0] == STAND_IN_WARNING
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.html").read_text()
    banner = report.index("Stand-in base model: these figures test the machinery, not the quality.")
    assert banner < report.index("<h1>") and "Training loss per optimisation step" in report
    for folder in ("base", "finetuned"):  # same file names: same prompts and seeds
        assert sorted(p.name for p in (root / "work" / folder / "sintel").glob("*.png")) == \
            [f"sintel_p0_s{s}_{i}.png" for s in (11, 3) for i in (0, 1)]
    assert '"stand_in": true' in capsys.readouterr().out


@pytest.mark.parametrize("missing, message", [
    ("model", "input/model"), ("base_model", "input/base_model"), ("weights", "no pytorch_lora_weights.safetensors"),
])
def test_evaluate_entry_point_refuses_missing_inputs_before_generating(tiny_base, lora_archive, tmp_path, capsys,
                                                                        missing, message):
    from containers.processing import evaluate
    from containers.processing.common import run_main

    archive = lora_archive
    if missing == "weights":
        archive = tmp_path / "model.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            info = tarfile.TarInfo("training_log.jsonl")
            tar.addfile(info, io.BytesIO(b""))
    root = _root(tmp_path, None if missing == "base_model" else tiny_base, None if missing == "model" else archive)
    code = run_main(evaluate.main, ["--processing-root", str(root), "--finetune-backend", "sagemaker",
                                    "--device", "cpu"])
    assert code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error
    assert not (root / "work" / "base").exists() and not (root / "output" / "evaluation" / "evaluation.json").exists()
