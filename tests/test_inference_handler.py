"""The endpoint's handler (containers/inference/inference.py) as the SageMaker inference toolkit calls it:
model_fn once, then input_fn, predict_fn, output_fn per request, on the tiny random-weight SDXL stand-in with a
random nonzero LoRA (the stand-in tests the machinery, not the quality)."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from storyboard_testutil import write_random_lora

from containers.inference import inference as handler
from core.errors import InputError


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """``(base folder, /opt/ml/model)``: the stand-in base and an extracted LoRA artifact trained at 64 px."""
    from steps.lora.model import build_tiny_sdxl

    root = tmp_path_factory.mktemp("endpoint")
    base = build_tiny_sdxl(root / "base_model", seed=0)
    model_dir = write_random_lora(base, root / "model", seed=1)
    (model_dir / "training_config.json").write_text(json.dumps({"hyperparameters": {"resolution": "64"}}))
    return base, model_dir


@pytest.fixture(scope="module")
def model(model_dirs):
    base, model_dir = model_dirs
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(handler.BASE_MODEL_DIR_ENV, str(base))
        patch.setenv(handler.DEVICE_ENV, "cpu")
        return handler.model_fn(str(model_dir))


def _invoke(model, request: dict, accept: str | None = "image/png") -> tuple[bytes, str]:
    data = handler.input_fn(json.dumps(request).encode(), "application/json")
    return handler.output_fn(handler.predict_fn(data, model), accept)


def _image(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_model_fn_loads_base_and_lora_with_the_training_resolution(model, model_dirs):
    assert model.base.stand_in and model.lora_dir == model_dirs[1]
    assert (model.width, model.height, model.num_inference_steps, model.guidance_scale) == (64, 64, 30, 7.5)
    assert model.pipeline.get_list_adapters()  # the LoRA is loaded


def test_png_of_the_requested_size_deterministic_per_seed(model):
    request = {"prompt": "sintel on a cliff", "seed": 5, "num_inference_steps": 2, "width": 80, "height": 64}
    body, content_type = _invoke(model, request)
    first = _image(body)
    assert content_type == "image/png" and first.shape == (64, 80, 3)
    assert np.array_equal(first, _image(_invoke(model, request, accept="*/*")[0]))
    other = _image(_invoke(model, {**request, "seed": 6})[0])
    assert np.abs(first - other).mean() > 1.0
    default = _image(_invoke(model, {"prompt": "sintel", "seed": 1, "num_inference_steps": 1}, accept=None)[0])
    assert default.shape == (64, 64, 3)  # the training resolution


def test_json_answer_carries_the_png_and_the_settings(model):
    body, content_type = _invoke(model, {"prompt": "bunny", "seed": 3, "num_inference_steps": 1,
                                         "guidance_scale": 1.0, "negative_prompt": "blurry"},
                                 accept="application/json")
    document = json.loads(body)
    assert content_type == "application/json"
    assert {k: document[k] for k in ("seed", "width", "height", "num_inference_steps", "guidance_scale",
                                     "stand_in", "content_type")} == \
        {"seed": 3, "width": 64, "height": 64, "num_inference_steps": 1, "guidance_scale": 1.0, "stand_in": True,
         "content_type": "image/png"}
    assert _image(base64.b64decode(document["image"])).shape == (64, 64, 3)


@pytest.mark.parametrize("body, message", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (json.dumps({"seed": 1}).encode(), "'prompt' is required"),
    (json.dumps({"prompt": "  ", "seed": 1}).encode(), "non-empty string"),
    (json.dumps({"prompt": "a"}).encode(), "'seed' is required"),
    (json.dumps({"prompt": "a", "seed": True}).encode(), "'seed' must be an integer"),
    (json.dumps({"prompt": "a", "seed": -1}).encode(), "'seed' must be 0..4294967295"),
    (json.dumps({"prompt": "a", "seed": 1, "width": 100}).encode(), "width 100 px must be a multiple of 8"),
    (json.dumps({"prompt": "a", "seed": 1, "height": 4096}).encode(), "height 4096 px is outside 64..2048"),
    (json.dumps({"prompt": "a", "seed": 1, "width": 64.0}).encode(), "width must be an integer"),
    (json.dumps({"prompt": "a", "seed": 1, "num_inference_steps": 0}).encode(), "'num_inference_steps' must be 1..200"),
    (json.dumps({"prompt": "a", "seed": 1, "num_inference_steps": 500}).encode(), "must be 1..200"),
    (json.dumps({"prompt": "a", "seed": 1, "guidance_scale": "high"}).encode(), "'guidance_scale' must be a number"),
    (json.dumps({"prompt": "a", "seed": 1, "steps": 5}).encode(), "unknown key(s) ['steps']"),
])
def test_bad_requests_are_refused_with_400_and_a_reason(body, message):
    with pytest.raises(handler.RequestError) as caught:
        handler.input_fn(body, "application/json")
    assert caught.value.status_code == 400 and message in caught.value.message


def test_unsupported_content_types_are_refused():
    with pytest.raises(handler.RequestError) as caught:
        handler.input_fn(b"prompt=a", "text/plain")
    assert caught.value.status_code == 415
    assert handler.input_fn('{"prompt": "a", "seed": 0}', "application/json; charset=utf-8")["seed"] == 0
    image = {"image": Image.new("RGB", (8, 8)), "seed": 0}
    with pytest.raises(handler.RequestError) as caught:
        handler.output_fn(image, "text/csv")
    assert caught.value.status_code == 406
    assert handler.output_fn(image, "text/csv, application/json;q=0.5")[1] == "application/json"


def test_model_fn_names_a_missing_base_or_lora(model_dirs, tmp_path, monkeypatch):
    base, model_dir = model_dirs
    monkeypatch.setenv(handler.BASE_MODEL_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="nowhere"):
        handler.model_fn(str(model_dir))
    monkeypatch.setenv(handler.BASE_MODEL_DIR_ENV, str(base))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="pytorch_lora_weights.safetensors"):
        handler.model_fn(str(tmp_path / "empty"))
    shutil.rmtree(tmp_path / "empty")
