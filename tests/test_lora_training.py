"""LoRA fine-tune on the tiny random-weight SDXL stand-in, on the CPU: model loading, artifacts, the
training entry point (outputs, resume, bad input). The stand-in tests the machinery, not the quality."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from steps.errors import InputError
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
