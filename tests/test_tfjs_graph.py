"""core.tfjs_graph: TensorFlow's operations in NumPy, checked against direct loops, on a small graph model written
here, and on the real CenterNet of core.feature_backbone (its detections on a real frame land on the character)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from core.errors import InputError
from core.tfjs_graph import TfjsGraphModel, conv2d, depthwise_conv2d, max_pool, resize_bilinear


def _naive_conv(x, k, stride, depthwise=False):
    """TensorFlow's SAME convolution by direct loops over output pixels (x: (C, H, W); k: (KH, KW, C, O|M))."""
    c, h, w = x.shape
    kh, kw = k.shape[:2]
    oh, ow = -(-h // stride), -(-w // stride)
    ph, pw = max((oh - 1) * stride + kh - h, 0), max((ow - 1) * stride + kw - w, 0)
    xp = np.zeros((c, h + ph, w + pw), np.float64)
    xp[:, ph // 2:ph // 2 + h, pw // 2:pw // 2 + w] = x
    outs = c * k.shape[3] if depthwise else k.shape[3]
    out = np.zeros((outs, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * stride:i * stride + kh, j * stride:j * stride + kw]  # (C, KH, KW)
            if depthwise:
                out[:, i, j] = np.einsum("cij,ijcm->cm", patch, k).reshape(-1)
            else:
                out[:, i, j] = np.einsum("cij,ijco->o", patch, k)
    return out


@pytest.mark.parametrize("size,kernel,stride", [((5, 7), 3, 1), ((6, 9), 3, 2), ((7, 7), 5, 2), ((4, 6), 1, 2)])
def test_convolutions_match_direct_loops_with_tensorflow_same_padding(size, kernel, stride):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, *size)).astype(np.float32)
    k = rng.normal(size=(kernel, kernel, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(conv2d(x, k, (stride, stride), "SAME"), _naive_conv(x, k, stride), atol=1e-4)
    kd = rng.normal(size=(kernel, kernel, 3, 2)).astype(np.float32)
    np.testing.assert_allclose(depthwise_conv2d(x, kd, (stride, stride), "SAME"),
                               _naive_conv(x, kd, stride, depthwise=True), atol=1e-4)


def test_pooling_and_legacy_bilinear_resize():
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    assert max_pool(x, (3, 3), (1, 1), "SAME")[0, 0, 0] == 5  # the top-left 2x2 after -inf padding
    up = resize_bilinear(x, (8, 8))  # legacy: source = output * 0.5, no half-pixel offset
    assert up[0, 0, 0] == 0 and up[0, 0, 1] == 0.5 and up[0, 1, 0] == 2 and up[0, 7, 7] == 15


def _attr_s(text: str) -> dict:
    return {"s": base64.b64encode(text.encode()).decode()}


def _write_model(folder: Path, weights: dict[str, np.ndarray], nodes: list[dict],
                 float16: frozenset[str] = frozenset()) -> Path:
    manifest, blobs = [], []
    for name, value in weights.items():
        entry = {"name": name, "shape": list(value.shape), "dtype": "int32" if value.dtype.kind == "i" else "float32"}
        if name in float16:
            entry["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
            blobs.append(value.astype(np.float16).tobytes())
        else:
            blobs.append(value.astype(np.int32 if value.dtype.kind == "i" else np.float32).tobytes())
        manifest.append(entry)
    (folder / "model.bin").write_bytes(b"".join(blobs))
    consts = [{"name": n, "op": "Const", "attr": {}} for n in weights]
    spec = {"format": "graph-model", "modelTopology": {"node": consts + nodes},
            "weightsManifest": [{"paths": ["model.bin"], "weights": manifest}]}
    (folder / "model.json").write_text(json.dumps(spec))
    return folder / "model.json"


def test_a_small_graph_runs_as_tensorflow_would(tmp_path):
    rng = np.random.default_rng(2)
    k = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    bias = rng.normal(size=4).astype(np.float32)
    scale = rng.normal(size=(1, 1, 1, 4)).astype(np.float32)
    conv_attr = {"strides": {"list": {"i": ["1", "2", "2", "1"]}}, "padding": _attr_s("SAME"),
                 "data_format": _attr_s("NHWC"),
                 "fused_ops": {"list": {"s": [_attr_s("BiasAdd")["s"], _attr_s("Relu6")["s"]]}}}
    nodes = [
        {"name": "image", "op": "Placeholder", "attr": {}},
        {"name": "conv", "op": "_FusedConv2D", "input": ["image", "k", "bias"], "attr": conv_attr},
        {"name": "squeeze", "op": "Mean", "input": ["conv", "axes"], "attr": {"keep_dims": {"b": True}}},
        {"name": "excite", "op": "Sigmoid", "input": ["squeeze"]},
        {"name": "gated", "op": "Mul", "input": ["excite", "conv"]},
        {"name": "scaled", "op": "Mul", "input": ["gated", "scale"]},
        {"name": "both", "op": "ConcatV2", "input": ["scaled", "conv", "axis"]},
        {"name": "out", "op": "Identity", "input": ["both"]},
        {"name": "unused", "op": "Erf", "input": ["both"]},
    ]
    weights = {"k": k, "bias": bias, "scale": scale, "axes": np.array([1, 2], np.int32),
               "axis": np.array(3, np.int32)}
    model = TfjsGraphModel(_write_model(tmp_path, weights, nodes, float16={"k"}))
    x = rng.uniform(0, 1, size=(1, 9, 10, 3)).astype(np.float32)
    out = model.run({"image": x}, ["out"])["out"]

    k16 = k.astype(np.float16).astype(np.float64)
    conv = np.clip(_naive_conv(x[0].transpose(2, 0, 1).astype(np.float64), k16, 2) + bias[:, None, None], 0, 6)
    gate = 1 / (1 + np.exp(-conv.mean(axis=(1, 2), keepdims=True)))
    expected = np.concatenate([conv * gate * scale[0, 0, 0][:, None, None], conv]).transpose(1, 2, 0)
    assert out.shape == (5, 5, 8)
    np.testing.assert_allclose(out, expected, atol=1e-4)
    with pytest.raises(NotImplementedError, match="Erf"):
        model.run({"image": x}, ["unused"])
    with pytest.raises(KeyError, match="image"):
        model.run({}, ["out"])


def test_bad_model_files_are_named(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        TfjsGraphModel(tmp_path / "model.json")
    (tmp_path / "layers.json").write_text(json.dumps({"format": "layers-model", "modelTopology": {}}))
    with pytest.raises(InputError, match="not a TensorFlow.js graph model"):
        TfjsGraphModel(tmp_path / "layers.json")
    path = _write_model(tmp_path, {"k": np.ones((2, 2), np.float32)}, [])
    (tmp_path / "model.bin").write_bytes(b"\0" * 4)
    with pytest.raises(InputError, match="end before k"):
        TfjsGraphModel(path)


COCO_ANIMALS = {14: "bird", 15: "cat", 16: "dog", 17: "horse", 18: "sheep", 19: "cow", 20: "elephant", 21: "bear",
                22: "zebra", 23: "giraffe"}
"""COCO's animal classes, by the index of CenterNet's 80-class heatmap."""


def test_the_real_centernet_finds_the_bunny_where_boxes_json_has_him(feature_model, media, boxes):
    """The whole detector, head included, on real weights: a wrong operation would scatter its peaks. At 22 s of
    bbb_30s.mp4 (the bunny from behind, a shot apart from the references) its strongest peak is an animal whose box
    overlaps the hand-labelled body box."""
    import av
    import cv2

    from core.feature_backbone import INPUT

    with av.open(str(media / "clips" / "bbb_30s.mp4")) as container:
        frame = next(f for i, f in enumerate(container.decode(video=0)) if i == 22 * 25).to_ndarray(format="rgb24")
    h, w = frame.shape[:2]
    scale = 512 / max(h, w)
    canvas = np.zeros((512, 512, 3), np.float32)
    canvas[:round(h * scale), :round(w * scale)] = cv2.resize(frame, (round(w * scale), round(h * scale)))
    out = TfjsGraphModel(feature_model / "centernet.json").run({INPUT: canvas[None]},
                                                               ["tower_0/keypoints", "tower_0/wh"])
    heat, wh = out["tower_0/keypoints"], out["tower_0/wh"]  # (128, 128, 80) and (128, 128, 4): l, t, r, b
    y, x, cls = np.unravel_index(np.argmax(heat), heat.shape)
    left, top, right, bottom = wh[y, x]
    box = np.array([x * 4 - left, y * 4 - top, x * 4 + right, y * 4 + bottom]) / scale
    bx, by, bw, bh = boxes["clips"]["clips/bbb_30s.mp4"]["frames"]["22"]["bunny"]["body"]
    ix = max(0.0, min(box[2], bx + bw) - max(box[0], bx))
    iy = max(0.0, min(box[3], by + bh) - max(box[1], by))
    inter = ix * iy
    iou = inter / ((box[2] - box[0]) * (box[3] - box[1]) + bw * bh - inter)
    print(f"CenterNet at 22 s: {COCO_ANIMALS.get(int(cls), cls)} {heat[y, x, cls]:.2f}, box IoU {iou:.2f}")
    assert int(cls) in COCO_ANIMALS and iou >= 0.7
