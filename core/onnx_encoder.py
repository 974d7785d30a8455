"""A user-supplied ONNX image encoder run by onnxruntime on CPU, as an :class:`core.embeddings.ImageEmbedder`.

Use it to plug in a learned encoder (for example a DINOv2 or CLIP image tower exported to ONNX) without
adding a deep-learning framework to the processing image. Needs the ``onnx`` extra
(``pip install "storyboard[onnx]"``, which installs ``onnxruntime``).

Preprocessing (the torchvision ImageNet convention that most exported encoders expect):
resize to ``input_size`` x ``input_size`` (the whole image, aspect ratio not kept), RGB float32 / 255,
subtract the ImageNet mean ``(0.485, 0.456, 0.406)`` and divide by the std ``(0.229, 0.224, 0.225)``,
NCHW layout (NHWC where the model's input has 3 as its last dimension).

Output: the model's first output. ``(N, D)`` is used as is; ``(N, C, H, W)`` is global-average-pooled
over H and W; ``(N, T, D)`` (token sequences, as from a ViT) is averaged over the tokens. Rows are
L2-normalised.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.embeddings import normalize_rows
from core.errors import InputError
from core.images import check_rgb_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError("embeddings.backend 'onnx' needs onnxruntime: install the onnx extra "
                          "(pip install \"storyboard[onnx]\") or pip install onnxruntime") from err
    return onnxruntime


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class OnnxImageEmbedder:
    """Embed images with an ONNX image encoder on onnxruntime's CPU execution provider.

    Args:
        model_path: a ``.onnx`` file whose first input is an image batch ``(N, 3, H, W)`` (or
            ``(N, H, W, 3)``) of float32, float16 or float64; N may be symbolic or fixed.
        input_size: square input side in pixels; must match H and W where the model fixes them.
        batch_size: images per ``session.run`` (ignored where the model fixes N).
        intra_op_threads: onnxruntime intra-op threads; ``None`` lets onnxruntime choose.

    Attributes:
        name: ``onnx-<file stem>-<first 12 hex digits of the file's SHA-256>``, so embeddings from
            different model files are never mixed up in metadata.
        dimension: the embedding length D, found by running one blank image at load time.

    Raises:
        ImportError: onnxruntime is not installed (the message names the ``onnx`` extra).
        InputError: the file is missing or not a valid ONNX model, its first input is not image-shaped,
            its input size differs from ``input_size``, or its first output is not 2-, 3- or 4-D.
    """

    def __init__(self, model_path: str | Path, input_size: int = 224, batch_size: int = 32,
                 intra_op_threads: int | None = None) -> None:
        ort = _import_onnxruntime()
        path = Path(model_path)
        if not path.is_file():
            raise InputError(f"ONNX model {path} does not exist; set embeddings.onnx_model_path to a .onnx file")
        if input_size < 1 or batch_size < 1:
            raise ValueError(f"input_size and batch_size must be positive, got {input_size} and {batch_size}")
        options = ort.SessionOptions()
        if intra_op_threads is not None:
            options.intra_op_num_threads = int(intra_op_threads)
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types for unreadable models
            raise InputError(f"onnxruntime cannot load {path}: {err}") from err
        self.model_path = path
        self.input_size = int(input_size)
        self.batch_size = int(batch_size)
        model_input = self._session.get_inputs()[0]
        self._input_name = model_input.name
        self._output_name = self._session.get_outputs()[0].name
        self._layout, self._fixed_batch = self._check_input(model_input.shape, path)
        if model_input.type not in _FLOAT_TYPES:
            raise InputError(f"ONNX model {path}: input {model_input.name!r} has type {model_input.type}; "
                             "an image encoder takes float pixels")
        self._dtype = _FLOAT_TYPES[model_input.type]
        self._mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
        self._std = np.asarray(IMAGENET_STD, dtype=np.float32)
        self.name = f"onnx-{path.stem}-{_file_digest(path)[:12]}"
        probe = self._forward(np.zeros((self._fixed_batch or 1, self.input_size, self.input_size, 3), np.float32))
        self.dimension = int(probe.shape[1])

    def _check_input(self, shape: Sequence[Any], path: Path) -> tuple[str, int | None]:
        """Return ``("nchw" | "nhwc", fixed batch or None)`` for an image-shaped input, else raise InputError."""
        dims = list(shape)
        layout = None
        if len(dims) == 4:
            if dims[1] == 3:
                layout = "nchw"
            elif dims[3] == 3:
                layout = "nhwc"
        if layout is None:
            raise InputError(f"ONNX model {path}: first input has shape {dims}; an image encoder needs "
                             "(N, 3, H, W) or (N, H, W, 3)")
        spatial = dims[2:4] if layout == "nchw" else dims[1:3]
        for dim in spatial:
            if isinstance(dim, int) and dim > 0 and dim != self.input_size:
                raise InputError(f"ONNX model {path} takes {spatial[0]}x{spatial[1]} images but "
                                 f"embeddings.onnx_input_size is {self.input_size}; set it to {dim}")
        batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
        return layout, batch

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Resize and normalise images into an ``(N, input_size, input_size, 3)`` float32 NHWC batch.

        Raises:
            InputError: an image is not ``(H, W, 3)`` uint8.
        """
        side = self.input_size
        batch = np.empty((len(images), side, side, 3), dtype=np.float32)
        for i, image in enumerate(images):
            check_rgb_image(image, f"image {i}")
            h, w = image.shape[:2]
            interpolation = cv2.INTER_AREA if min(h, w) > side else cv2.INTER_LINEAR
            resized = cv2.resize(image, (side, side), interpolation=interpolation)
            batch[i] = (resized.astype(np.float32) / 255.0 - self._mean) / self._std
        return batch

    def _forward(self, nhwc: np.ndarray) -> np.ndarray:
        tensor = nhwc if self._layout == "nhwc" else nhwc.transpose(0, 3, 1, 2)
        tensor = np.ascontiguousarray(tensor, dtype=self._dtype)
        output = np.asarray(self._session.run([self._output_name], {self._input_name: tensor})[0])
        if output.ndim == 4:
            output = output.mean(axis=(2, 3))
        elif output.ndim == 3:
            output = output.mean(axis=1)
        elif output.ndim != 2:
            raise InputError(f"ONNX model {self.model_path}: first output has shape {output.shape}; expected "
                             "(N, D), (N, T, D) or (N, C, H, W)")
        if output.shape[0] != tensor.shape[0]:
            raise InputError(f"ONNX model {self.model_path}: output batch {output.shape[0]} differs from the "
                             f"input batch {tensor.shape[0]}")
        return output.astype(np.float32)

    def embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Embed ``images`` (each ``(H, W, 3)`` uint8 RGB) into an ``(N, D)`` float32 array of unit rows.

        Deterministic for a given model file and onnxruntime build (CPU provider).

        Raises:
            InputError: an image is not ``(H, W, 3)`` uint8.
        """
        if len(images) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        batch = self.preprocess(images)
        step = self._fixed_batch or self.batch_size
        rows = []
        for start in range(0, len(batch), step):
            chunk = batch[start:start + step]
            if self._fixed_batch and len(chunk) < self._fixed_batch:
                pad = np.zeros((self._fixed_batch - len(chunk), *chunk.shape[1:]), dtype=chunk.dtype)
                rows.append(self._forward(np.concatenate([chunk, pad]))[:len(chunk)])
            else:
                rows.append(self._forward(chunk))
        return normalize_rows(np.concatenate(rows))
