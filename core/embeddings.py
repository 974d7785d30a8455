"""Image embeddings behind one interface, and the local descriptor that needs no learned weights.

Backends (chosen by ``embeddings.backend`` in ``pipeline.yaml``, see :func:`make_embedder`):

- ``local``: :class:`ColorTextureDescriptor`, a classical descriptor (colour histograms on a spatial
  pyramid plus histograms of oriented gradients), deterministic and offline; the Evaluate step uses
  :class:`core.layout_descriptor.LabLayoutDescriptor` (CIELAB colour layout on a 3-level grid plus HOG).
- ``titan``: Amazon Titan Multimodal Embeddings G1 through Bedrock (:mod:`core.titan_embeddings`).
- ``nova``: Amazon Nova Multimodal Embeddings through Bedrock, us-east-1 (:mod:`core.nova_embeddings`).
- ``onnx``: a user-supplied ONNX image encoder run by onnxruntime (:mod:`core.onnx_encoder`).

Every backend returns L2-normalised float32 rows, so the cosine similarity of two images is the dot
product of their rows (DESIGN §5: "Normalise vectors before cosine similarity").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import cv2
import numpy as np
from skimage.feature import hog

if TYPE_CHECKING:
    pass


@runtime_checkable
class ImageEmbedder(Protocol):
    """Maps RGB images to unit vectors.

    Attributes:
        name: backend identifier written into metadata (for example ``"local-colour-hog-v1"``).
        dimension: length D of every embedding.
    """

    name: str
    dimension: int

    def embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Embed ``images`` (each ``(H, W, 3)`` uint8 RGB) into an ``(N, D)`` float32 array, rows of norm 1."""
        ...


@runtime_checkable
class TextImageEmbedder(ImageEmbedder, Protocol):
    """An embedder whose texts and images share one space (Titan Multimodal), for prompt fidelity."""

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` into an ``(N, D)`` float32 array, rows of norm 1."""
        ...


def normalize_rows(matrix: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Return ``matrix`` (N, D) as float32 with every row scaled to unit L2 norm (zero rows stay zero)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-D array of embeddings, got shape {matrix.shape}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, eps)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` (N, D) with every row of ``b`` (M, D): an (N, M) array in [-1, 1].

    Raises:
        ValueError: the two arrays have different dimensions D (embeddings from different backends).
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"embedding dimensions differ: {a.shape[-1]} vs {b.shape[-1]}; "
                         "embed both sets with the same backend")
    return np.clip(normalize_rows(a) @ normalize_rows(b).T, -1.0, 1.0)


class ColorTextureDescriptor:
    """Local image descriptor with no learned weights: colour on a spatial pyramid plus HOG.

    The image is resized to ``size`` x ``size``. Features:

    - colour: joint hue-saturation histograms (``hue_bins`` x ``sat_bins``) plus a value histogram in
      HSV, on a 1x1 and a 2x2 grid (a spatial pyramid, Lazebnik et al. 2006), square-rooted
      (Hellinger kernel, Arandjelovic & Zisserman 2012). Pixels of low saturation fall in the
      saturation bin 0 of each hue, so grey and white characters still have a colour signature;
    - shape: histograms of oriented gradients (Dalal & Triggs 2005) through ``skimage.feature.hog``
      on a ``hog_size`` square grey image (``hog_cell`` pixel cells, 2x2-cell blocks, 9 orientations,
      L2-Hys; defaults 64 and 16); OpenCV 5
      wheels no longer ship ``cv2.HOGDescriptor``.

    Each group is L2-normalised, weighted (``color_weight`` for colour, ``1 - color_weight`` for HOG,
    in squared norm), concatenated and L2-normalised again. All features are non-negative, so cosine
    similarities lie in [0, 1]; unrelated images typically score 0.3 to 0.6 and near-duplicates above 0.9.
    """

    name = "local-colour-hog-v1"

    def __init__(self, size: int = 128, hue_bins: int = 18, sat_bins: int = 4, val_bins: int = 8,
                 color_weight: float = 0.6, hog_size: int = 64, hog_cell: int = 16) -> None:
        if not 0.0 <= color_weight <= 1.0:
            raise ValueError(f"color_weight must be in [0, 1], got {color_weight}")
        self.size = size
        self.hue_bins = hue_bins
        self.sat_bins = sat_bins
        self.val_bins = val_bins
        self.color_weight = color_weight
        self.hog_size = hog_size
        self.hog_cell = hog_cell
        cells = hog_size // hog_cell
        if cells < 2:
            raise ValueError(f"hog_size ({hog_size}) must hold at least 2 cells of hog_cell ({hog_cell}) pixels")
        self._color_dim = 5 * (hue_bins * sat_bins + val_bins)
        self._hog_dim = (cells - 1) ** 2 * 4 * 9  # 2x2-cell blocks, 9 orientations
        self.dimension = self._color_dim + self._hog_dim

    def _color(self, hsv: np.ndarray) -> np.ndarray:
        h, w = hsv.shape[:2]
        cells = [hsv] + [hsv[i * h // 2:(i + 1) * h // 2, j * w // 2:(j + 1) * w // 2]
                         for i in range(2) for j in range(2)]
        parts = []
        for cell in cells:
            hs = cv2.calcHist([cell], [0, 1], None, [self.hue_bins, self.sat_bins], [0, 180, 0, 256]).ravel()
            v = cv2.calcHist([cell], [2], None, [self.val_bins], [0, 256]).ravel()
            hist = np.concatenate([hs, v])
            parts.append(np.sqrt(hist / max(hist.sum() / 2.0, 1.0)))
        return np.concatenate(parts)

    def embed_image(self, image: np.ndarray) -> np.ndarray:
        """Embed one ``(H, W, 3)`` uint8 RGB image into a ``(D,)`` float32 unit vector."""
        if image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
        resized = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(resized, cv2.COLOR_RGB2HSV)
        color = self._color(hsv)
        gray = cv2.cvtColor(cv2.resize(resized, (self.hog_size, self.hog_size), interpolation=cv2.INTER_AREA),
                            cv2.COLOR_RGB2GRAY)
        hog_vec = hog(gray, orientations=9, pixels_per_cell=(self.hog_cell, self.hog_cell), cells_per_block=(2, 2),
                      block_norm="L2-Hys", feature_vector=True).astype(np.float32)
        color = color / max(float(np.linalg.norm(color)), 1e-12)
        hog_vec = np.sqrt(np.maximum(hog_vec, 0.0))
        hog_vec = hog_vec / max(float(np.linalg.norm(hog_vec)), 1e-12)
        vec = np.concatenate([np.sqrt(self.color_weight) * color, np.sqrt(1.0 - self.color_weight) * hog_vec])
        return (vec / max(float(np.linalg.norm(vec)), 1e-12)).astype(np.float32)

    def embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Embed ``images`` into an ``(N, D)`` float32 array of unit rows (``(0, D)`` for no images)."""
        if len(images) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([self.embed_image(img) for img in images])


def embed_concurrently(jobs: Sequence[tuple[Any, str]], invoke: Callable[[Any, str], np.ndarray], dimension: int,
                       concurrency: int) -> np.ndarray:
    """Run ``invoke(body, what)`` for every ``(body, what)`` job on ``concurrency`` threads (results in job
    order) and return the ``(N, dimension)`` float32 rows L2-normalised; a failure cancels the requests not yet
    started and is raised. Shared by the Bedrock embedding backends (Titan, Nova)."""
    if not jobs:
        return np.zeros((0, dimension), dtype=np.float32)
    if concurrency == 1 or len(jobs) == 1:
        rows = [invoke(body, what) for body, what in jobs]
    else:
        pool = ThreadPoolExecutor(max_workers=min(concurrency, len(jobs)))
        try:
            futures = [pool.submit(invoke, body, what) for body, what in jobs]
            rows = [f.result() for f in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return normalize_rows(np.stack(rows))
