"""OnnxImageEmbedder on tiny ONNX encoders built in the test with the ``onnx`` package."""

from __future__ import annotations

import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from core.embedders import make_embedder  # noqa: E402
from core.embeddings import ImageEmbedder  # noqa: E402
from core.errors import InputError  # noqa: E402
from core.onnx_encoder import OnnxImageEmbedder  # noqa: E402

OPSET = 17


def _save(graph, path) -> str:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def conv_encoder(path, channels: int = 16, pool: bool = True, input_shape=("batch", 3, 64, 64), seed: int = 0) -> str:
    """Conv(3x3) + Relu [+ GlobalAveragePool + Flatten]: an (N, C) or (N, C, H, W) encoder."""
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.normal(size=(channels, 3, 3, 3)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.normal(scale=0.1, size=(channels,)).astype(np.float32), "B")
    nodes = [helper.make_node("Conv", ["pixel_values", "W", "B"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"])]
    if pool:
        nodes += [helper.make_node("GlobalAveragePool", ["relu"], ["gap"]),
                  helper.make_node("Flatten", ["gap"], ["embedding"], axis=1)]
        out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", channels])
    else:
        nodes += [helper.make_node("Identity", ["relu"], ["embedding"])]
        out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", channels, "h", "w"])
    graph = helper.make_graph(nodes, "tiny_encoder",
                              [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, list(input_shape))],
                              [out], initializer=[weight, bias])
    return _save(graph, path)


def _images():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:90, 0:120]
    stripes = np.stack([(xx * 2) % 256, (yy * 3) % 256, np.full_like(xx, 40)], axis=-1).astype(np.uint8)
    blob = np.zeros((70, 50, 3), np.uint8)
    blob[10:60, 10:40] = (250, 30, 30)
    noise = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
    return [stripes, blob, noise]


def test_shapes_norms_determinism_and_identity(tmp_path):
    path = conv_encoder(tmp_path / "enc.onnx", input_shape=("batch", 3, 64, 64))
    embedder = OnnxImageEmbedder(path, input_size=64, batch_size=2)
    assert isinstance(embedder, ImageEmbedder)
    assert embedder.dimension == 16
    assert embedder.name.startswith("onnx-enc-") and len(embedder.name) == len("onnx-enc-") + 12
    images = _images()
    emb = embedder.embed_images(images)
    assert emb.shape == (3, 16) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # Deterministic, and independent of batching (batch_size 2 splits 3 images into 2 runs).
    again = OnnxImageEmbedder(path, input_size=64, batch_size=8).embed_images(images)
    np.testing.assert_allclose(emb, again, atol=1e-5)
    same = embedder.embed_images([images[0], images[0].copy()])
    assert float(same[0] @ same[1]) == pytest.approx(1.0, abs=1e-6)
    cos = emb @ emb.T
    assert cos[0, 1] < 0.999 and cos[0, 2] < 0.999 and cos[1, 2] < 0.999
    assert embedder.embed_images([]).shape == (0, 16)


def test_feature_map_output_is_average_pooled(tmp_path):
    pooled = OnnxImageEmbedder(conv_encoder(tmp_path / "pooled.onnx", seed=3), input_size=64)
    fmap = OnnxImageEmbedder(conv_encoder(tmp_path / "fmap.onnx", pool=False, seed=3), input_size=64)
    images = _images()
    assert fmap.dimension == 16
    np.testing.assert_allclose(fmap.embed_images(images), pooled.embed_images(images), atol=1e-4)
    # Different weight files give different names (metadata never mixes encoders).
    assert fmap.name != pooled.name


def test_preprocessing_is_imagenet_normalised(tmp_path):
    embedder = OnnxImageEmbedder(conv_encoder(tmp_path / "e.onnx"), input_size=64)
    grey = np.full((10, 20, 3), 128, np.uint8)
    batch = embedder.preprocess([grey])
    assert batch.shape == (1, 64, 64, 3)
    expected = (128 / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(batch[0, 5, 7], expected, atol=1e-5)


def test_fixed_batch_of_one_is_handled(tmp_path):
    path = conv_encoder(tmp_path / "b1.onnx", input_shape=(1, 3, 64, 64))
    embedder = OnnxImageEmbedder(path, input_size=64)
    emb = embedder.embed_images(_images())
    assert emb.shape == (3, 16)
    dynamic = OnnxImageEmbedder(conv_encoder(tmp_path / "dyn.onnx"), input_size=64).embed_images(_images())
    np.testing.assert_allclose(emb, dynamic, atol=1e-5)


def test_input_size_mismatch_names_the_setting(tmp_path):
    path = conv_encoder(tmp_path / "e.onnx", input_shape=("batch", 3, 64, 64))
    with pytest.raises(InputError, match="onnx_input_size is 224; set it to 64"):
        OnnxImageEmbedder(path, input_size=224)


def test_non_image_input_is_rejected(tmp_path):
    weight = numpy_helper.from_array(np.ones((8, 4), np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
                              initializer=[weight])
    path = _save(graph, tmp_path / "mlp.onnx")
    with pytest.raises(InputError, match=r"\(N, 3, H, W\)"):
        OnnxImageEmbedder(path, input_size=64)


def test_missing_file_and_bad_image(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        OnnxImageEmbedder(tmp_path / "nope.onnx")
    embedder = OnnxImageEmbedder(conv_encoder(tmp_path / "e.onnx"), input_size=64)
    with pytest.raises(InputError, match="image 0"):
        embedder.embed_images([np.zeros((8, 8), np.uint8)])


def test_missing_onnxruntime_says_which_extra(tmp_path, monkeypatch):
    path = conv_encoder(tmp_path / "e.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    with pytest.raises(ImportError, match=r"storyboard\[onnx\]"):
        OnnxImageEmbedder(path, input_size=64)


def test_make_embedder_builds_the_onnx_backend(tmp_path):
    from core.config import EmbeddingConfig as Config

    path = conv_encoder(tmp_path / "e.onnx")
    embedder = make_embedder(Config(backend="onnx", onnx_model_path=path, onnx_input_size=64))
    assert isinstance(embedder, OnnxImageEmbedder) and embedder.dimension == 16
