"""Run a TensorFlow.js graph model (``model.json`` and its weight shards) with NumPy, on CPU.

A TensorFlow.js graph model is a frozen TensorFlow GraphDef in JSON (``modelTopology.node``: each node's name, op,
inputs and attributes) with its constants in binary shards (``weightsManifest``; float16 or affine uint8/uint16
quantization allowed), as written by ``tensorflowjs_converter`` ("TensorFlow.js converter" README, model format).
:class:`TfjsGraphModel` runs the part of the graph that a requested output depends on, for one image at a time, in
NumPy: the convolutional layers of a mobile network are a few dozen matrix products, so this needs no deep-learning
framework in the processing image (TensorFlow with ``tensorflowjs`` and ``tf2onnx`` would be several hundred MB for
the fifteen operations below). Depthwise convolutions go through OpenCV's ``filter2D``, one channel at a time.

Supported operations, with TensorFlow's semantics (NHWC data, ``SAME`` padding split as TensorFlow splits it, the
extra row or column after; legacy ``ResizeBilinear`` without half-pixel centres): ``Const``, ``Placeholder``,
``Identity``, ``Conv2D``, ``DepthwiseConv2dNative``, ``_FusedConv2D`` and ``FusedDepthwiseConv2dNative`` (fused
``BiasAdd``, ``Relu``, ``Relu6``), ``Add``, ``AddV2``, ``Sub``, ``Mul``, ``Relu``, ``Relu6``, ``Sigmoid``, ``Mean`` over
the spatial axes, ``ConcatV2`` over channels, ``ResizeBilinear`` and ``MaxPool``. Any other op on the path to a
requested output raises :class:`NotImplementedError` naming it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from core.errors import InputError

_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_QUANTIZED = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}
_ELEMENTWISE = {"Add": np.add, "AddV2": np.add, "Sub": np.subtract, "Mul": np.multiply}


def _attr_str(attr: Mapping, key: str, default: str = "") -> str:
    raw = attr.get(key, {}).get("s")
    return base64.b64decode(raw).decode() if raw else default


def _attr_ints(attr: Mapping, key: str) -> list[int]:
    return [int(v) for v in attr.get(key, {}).get("list", {}).get("i", [])]


def _attr_strs(attr: Mapping, key: str) -> list[str]:
    return [base64.b64decode(v).decode() for v in attr.get(key, {}).get("list", {}).get("s", [])]


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``SAME`` padding of one axis: output ``ceil(size / stride)``, the total padding split with the
    odd pixel after (TensorFlow guide, "Convolution: padding")."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad(x: np.ndarray, kh: int, kw: int, sh: int, sw: int, padding: str, value: float = 0.0) -> np.ndarray:
    if padding == "VALID":
        return x
    if padding != "SAME":
        raise NotImplementedError(f"padding {padding!r} (only SAME and VALID are supported)")
    (t, b), (left, r) = _same_pads(x.shape[1], kh, sh), _same_pads(x.shape[2], kw, sw)
    return np.pad(x, ((0, 0), (t, b), (left, r)), constant_values=value)


def _windows(x: np.ndarray, kh: int, kw: int, sh: int, sw: int):
    """Yield ``(i, j, slice)``: for each kernel offset, the ``(C, OH, OW)`` input pixels it meets (VALID)."""
    oh, ow = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    for i in range(kh):
        for j in range(kw):
            yield i, j, x[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]


def conv2d(x: np.ndarray, kernel: np.ndarray, strides: Sequence[int], padding: str) -> np.ndarray:
    """TensorFlow ``Conv2D`` of one ``(C, H, W)`` image with an ``(KH, KW, C, O)`` kernel; returns ``(O, OH, OW)``."""
    kh, kw, cin, cout = kernel.shape
    sh, sw = strides
    x = _pad(x, kh, kw, sh, sw, padding)
    if kh == kw == 1:
        x = x[:, ::sh, ::sw]
        return np.tensordot(kernel[0, 0].T, x, axes=1)
    out = None
    for i, j, part in _windows(x, kh, kw, sh, sw):
        term = np.tensordot(kernel[i, j].T, part, axes=1)
        out = term if out is None else out + term
    return out


def depthwise_conv2d(x: np.ndarray, kernel: np.ndarray, strides: Sequence[int], padding: str) -> np.ndarray:
    """TensorFlow ``DepthwiseConv2dNative`` of a ``(C, H, W)`` image with a ``(KH, KW, C, M)`` kernel; returns
    ``(C * M, OH, OW)``, output channel ``c * M + m`` as TensorFlow orders them.

    Each channel is correlated by OpenCV's ``filter2D`` (as TensorFlow, a correlation, not a flipped convolution) on
    the padded input; the valid part is kept, then every ``stride``-th pixel."""
    kh, kw, c, m = kernel.shape
    sh, sw = strides
    x = np.ascontiguousarray(_pad(x, kh, kw, sh, sw, padding), dtype=np.float32)
    vh, vw = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    oh, ow = (vh - 1) // sh + 1, (vw - 1) // sw + 1
    out = np.empty((c * m, oh, ow), np.float32)
    anchor = (kw // 2, kh // 2)
    rows, cols = slice(kh // 2, kh // 2 + vh, sh), slice(kw // 2, kw // 2 + vw, sw)
    for ci in range(c):
        for mi in range(m):
            full = cv2.filter2D(x[ci], cv2.CV_32F, np.ascontiguousarray(kernel[:, :, ci, mi], dtype=np.float32),
                                anchor=anchor, borderType=cv2.BORDER_CONSTANT)
            out[ci * m + mi] = full[rows, cols]
    return out


def resize_bilinear(x: np.ndarray, size: Sequence[int], align_corners: bool = False,
                    half_pixel_centers: bool = False) -> np.ndarray:
    """TensorFlow ``ResizeBilinear`` of a ``(C, H, W)`` image to ``size`` ``(OH, OW)``."""
    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if align_corners and n_out > 1:
            src = np.arange(n_out) * ((n_in - 1) / (n_out - 1))
        elif half_pixel_centers:
            src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        else:
            src = np.arange(n_out) * (n_in / n_out)
        lo = np.minimum(np.floor(src).astype(np.intp), n_in - 1)
        return lo, np.minimum(lo + 1, n_in - 1), (src - lo).astype(np.float32)

    y0, y1, wy = axis(x.shape[1], int(size[0]))
    x0, x1, wx = axis(x.shape[2], int(size[1]))
    rows = x[:, y0] * (1 - wy)[None, :, None] + x[:, y1] * wy[None, :, None]
    return rows[:, :, x0] * (1 - wx) + rows[:, :, x1] * wx


def max_pool(x: np.ndarray, ksize: Sequence[int], strides: Sequence[int], padding: str) -> np.ndarray:
    """TensorFlow ``MaxPool`` of a ``(C, H, W)`` image (``SAME`` pads with -inf)."""
    kh, kw = ksize
    sh, sw = strides
    x = _pad(x, kh, kw, sh, sw, padding, value=-np.inf)
    out = None
    for _, _, part in _windows(x, kh, kw, sh, sw):
        out = part.copy() if out is None else np.maximum(out, part)
    return out


def _against_activation(value: np.ndarray, name: str) -> np.ndarray:
    """A constant broadcast against ``(C, H, W)`` activations: TensorFlow's NHWC ``(C,)`` or ``(1, 1, 1, C)`` becomes
    ``(C, 1, 1)``; scalars stay scalars."""
    if value.size == 1:
        return value.reshape(())
    if value.ndim == 4:
        return np.transpose(value[0], (2, 0, 1))
    if value.ndim == 1:
        return value[:, None, None]
    raise NotImplementedError(f"{name}: a value of shape {value.shape} against (C, H, W) activations")


class TfjsGraphModel:
    """A TensorFlow.js graph model loaded for NumPy inference on one image at a time (module docstring).

    Args:
        model_json: the model's ``model.json``; its weight shards are read from the same folder.

    Raises:
        InputError: the file is missing, is not a graph model, or its shards are missing or shorter than the
            manifest says.
    """

    def __init__(self, model_json: str | Path) -> None:
        path = Path(model_json)
        if not path.is_file():
            raise InputError(f"TensorFlow.js model {path} does not exist")
        spec = json.loads(path.read_text(encoding="utf-8"))
        if spec.get("format") != "graph-model" or "modelTopology" not in spec:
            raise InputError(f"{path} is not a TensorFlow.js graph model (format {spec.get('format')!r})")
        self.path = path
        self.nodes = {n["name"]: n for n in spec["modelTopology"]["node"]}
        self.constants = self._read_weights(spec.get("weightsManifest", []), path.parent)
        self._plans: dict[tuple[str, ...], list[str]] = {}  # outputs -> the nodes to run, in order

    def _read_weights(self, manifest: list[dict], folder: Path) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for group in manifest:
            parts = []
            for name in group["paths"]:
                shard = folder / name
                if not shard.is_file():
                    raise InputError(f"weight shard {shard} of {self.path} does not exist")
                parts.append(shard.read_bytes())
            raw, offset = b"".join(parts), 0
            for w in group["weights"]:
                shape = [int(s) for s in w["shape"]]
                count = int(np.prod(shape)) if shape else 1
                quant = w.get("quantization")
                dtype = _QUANTIZED[quant["dtype"]] if quant else _DTYPES[w["dtype"]]
                size = count * np.dtype(dtype).itemsize
                if offset + size > len(raw):
                    raise InputError(f"weight shards of {self.path} end before {w['name']}")
                values = np.frombuffer(raw, dtype, count, offset)
                offset += size
                if quant and quant["dtype"] != "float16":
                    values = values.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])
                out[w["name"]] = values.astype(_DTYPES[w["dtype"]]).reshape(shape)
        return out

    def _needed(self, outputs: Sequence[str]) -> list[str]:
        """The nodes the outputs depend on, in an order where each comes after its inputs (worked out once per set
        of outputs: a frame's run repeats it)."""
        key = tuple(outputs)
        if key in self._plans:
            return self._plans[key]
        order: list[str] = []
        state: dict[str, int] = {}
        for root in outputs:
            stack = [(root, False)]
            while stack:
                name, expanded = stack.pop()
                if expanded:
                    state[name] = 2
                    order.append(name)
                    continue
                if state.get(name):
                    continue
                if name not in self.nodes:
                    raise KeyError(f"{self.path} has no node {name!r}")
                state[name] = 1
                stack.append((name, True))
                stack.extend((src, False) for src in self._inputs_of(name) if not state.get(src))
        self._plans[key] = order
        return order

    def _inputs_of(self, name: str) -> list[str]:
        return [i.split(":")[0] for i in self.nodes[name].get("input", []) if not i.startswith("^")]

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Evaluate ``outputs`` for one image.

        Args:
            inputs: placeholder name -> ``(1, H, W, C)`` or ``(H, W, C)`` float32 NHWC array (TensorFlow's layout).
            outputs: node names.

        Returns:
            node name -> ``(H, W, C)`` float32 for image-shaped outputs, else the value as computed.

        Raises:
            KeyError: an unknown node or a missing input.
            NotImplementedError: an operation or attribute outside the supported set (module docstring).
        """
        values: dict[str, np.ndarray] = {}
        layout: set[str] = set()  # names whose value is a (C, H, W) activation
        for name in self._needed(outputs):
            node = self.nodes[name]
            op, attr, srcs = node["op"], node.get("attr", {}), self._inputs_of(name)
            if op == "Const":
                values[name] = self.constants[name]
                continue
            if op == "Placeholder":
                if name not in inputs:
                    raise KeyError(f"input {name!r} of {self.path} was not given")
                image = np.asarray(inputs[name], dtype=np.float32)
                image = image[0] if image.ndim == 4 else image
                values[name] = np.ascontiguousarray(np.transpose(image, (2, 0, 1)))
                layout.add(name)
                continue
            if attr.get("data_format") and _attr_str(attr, "data_format") != "NHWC":
                raise NotImplementedError(f"{name}: data_format {_attr_str(attr, 'data_format')} (NHWC only)")
            if any(d != 1 for d in _attr_ints(attr, "dilations")):
                raise NotImplementedError(f"{name}: dilated convolution")
            args = [values[s] for s in srcs]
            if op in ("Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"):
                strides = _attr_ints(attr, "strides")[1:3]
                padding = _attr_str(attr, "padding")
                if "Depthwise" in op:
                    out = depthwise_conv2d(args[0], args[1], strides, padding)
                else:
                    out = conv2d(args[0], args[1], strides, padding)
                for fused in _attr_strs(attr, "fused_ops"):
                    if fused == "BiasAdd":
                        out = out + args[2][:, None, None]
                    elif fused == "Relu":
                        out = np.maximum(out, 0)
                    elif fused == "Relu6":
                        out = np.clip(out, 0, 6)
                    else:
                        raise NotImplementedError(f"{name}: fused op {fused}")
            elif op in _ELEMENTWISE:
                if any(s in layout for s in srcs):
                    a, b = (values[s] if s in layout else _against_activation(values[s], s) for s in srcs)
                else:  # arithmetic between constants (shapes)
                    a, b = args
                out = _ELEMENTWISE[op](a, b)
            elif op == "Relu":
                out = np.maximum(args[0], 0)
            elif op == "Relu6":
                out = np.clip(args[0], 0, 6)
            elif op == "Sigmoid":
                out = 1.0 / (1.0 + np.exp(-args[0]))
            elif op == "Identity":
                out = args[0]
            elif op == "Mean":
                axes = sorted(int(a) % 4 for a in np.atleast_1d(args[1]))
                if axes != [1, 2] or not attr.get("keep_dims", {}).get("b", False):
                    raise NotImplementedError(f"{name}: Mean over axes {axes} (spatial with keep_dims only)")
                out = args[0].mean(axis=(1, 2), keepdims=True)
            elif op == "ConcatV2":
                if int(args[-1]) % 4 != 3:
                    raise NotImplementedError(f"{name}: ConcatV2 over axis {int(args[-1])} (channels only)")
                out = np.concatenate(args[:-1], axis=0)
            elif op == "ResizeBilinear":
                out = resize_bilinear(args[0], [int(v) for v in args[1]],
                                      attr.get("align_corners", {}).get("b", False),
                                      attr.get("half_pixel_centers", {}).get("b", False))
            elif op == "MaxPool":
                out = max_pool(args[0], _attr_ints(attr, "ksize")[1:3], _attr_ints(attr, "strides")[1:3],
                               _attr_str(attr, "padding"))
            else:
                raise NotImplementedError(f"{name}: operation {op} is not supported by core.tfjs_graph")
            out = np.asarray(out)
            values[name] = out.astype(np.float32, copy=False) if out.dtype.kind == "f" else out
            if any(s in layout for s in srcs) and np.ndim(out) == 3:
                layout.add(name)
        return {o: np.transpose(values[o], (1, 2, 0)) if o in layout else values[o] for o in outputs}
