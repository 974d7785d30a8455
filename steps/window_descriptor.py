"""The local detector's window descriptor, computed for thousands of windows at once.

:class:`WindowDescriptor` is :class:`core.embeddings.ColorTextureDescriptor` with the local detector's settings
(64 px windows, 8 px HOG cells, colour weight 0.3) rewritten to work on a batch: every window is resized to
64 x 64 px, the batch is stacked into one ``(N, 64, 64, 3)`` array, and the colour histograms and histograms of
oriented gradients of all windows come from a few array operations instead of one library call per window
(``tests/test_local_detector.py`` holds the two within a cosine similarity of 0.999 on real and synthetic
crops). On 2 cores
it describes a 640x360 frame's 1,500 windows in about 0.1 s, against 1.5 s one by one.

Features (same as :class:`~core.embeddings.ColorTextureDescriptor`):

- colour: joint hue-saturation histograms (18 x 4 bins) plus a value histogram (8 bins) in HSV, on a 1x1 and a
  2x2 grid (spatial pyramid, Lazebnik et al. 2006), square-rooted (Hellinger kernel);
- shape: histograms of oriented gradients (Dalal & Triggs 2005): centred differences, 9 unsigned orientation
  bins, 8 px cells, 2x2-cell blocks normalised with L2-Hys (clip at 0.2), square-rooted.

Each group is L2-normalised, weighted (0.3 colour, 0.7 HOG, in squared norm), concatenated, L2-normalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

SIZE = 64
CELL = 8
ORIENTATIONS = 9
HUE_BINS, SAT_BINS, VAL_BINS = 18, 4, 8
COLOUR_BINS = HUE_BINS * SAT_BINS + VAL_BINS
Box = tuple[int, int, int, int]
L2HYS_CLIP = 0.2
"""Dalal & Triggs 2005, section 6.4: L2-norm, clip at 0.2, renormalise."""


class WindowDescriptor:
    """Batch descriptor of image windows: ``(N, D)`` float32 unit rows, ``D`` = 5 x 80 colour + 1,764 HOG.

    Args:
        color_weight: share of the squared norm given to colour, in [0, 1] (default 0.3).
    """

    name = "local-window-colour-hog-v1"

    def __init__(self, color_weight: float = 0.3) -> None:
        if not 0.0 <= color_weight <= 1.0:
            raise ValueError(f"color_weight must be in [0, 1], got {color_weight}")
        self.color_weight = color_weight
        cells = SIZE // CELL
        self.dimension = 5 * COLOUR_BINS + (cells - 1) ** 2 * 4 * ORIENTATIONS

    def describe_windows(self, image: np.ndarray, windows: Sequence[Box]) -> np.ndarray:
        """Describe the windows ``(x, y, w, h)`` (source pixels, inside the image) of one ``(H, W, 3)`` uint8 RGB
        image: ``(len(windows), D)``."""
        return self.describe([image[y:y + h, x:x + w] for x, y, w, h in windows])

    def describe(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Describe ``(h, w, 3)`` uint8 RGB images (any sizes): ``(N, D)`` float32 unit rows (``(0, D)`` for none).

        Raises:
            ValueError: an image is not ``(h, w, 3)`` with pixels.
        """
        if len(images) == 0:
            return np.zeros((0, self.dimension), np.float32)
        for img in images:
            if img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
                raise ValueError(f"expected (h, w, 3) RGB images, got shape {img.shape}")
        batch = np.stack([cv2.resize(np.ascontiguousarray(img), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
                          for img in images])
        n = len(batch)
        tall = batch.reshape(n * SIZE, SIZE, 3)  # one colour conversion for the whole batch
        colour = self._colour(cv2.cvtColor(tall, cv2.COLOR_RGB2HSV).reshape(n, SIZE, SIZE, 3))
        shape = self._hog(cv2.cvtColor(tall, cv2.COLOR_RGB2GRAY).reshape(n, SIZE, SIZE).astype(np.float32))
        return self._combine(colour, shape)

    def dense(self, image: np.ndarray, content: Box, scales: Sequence[float], aspects: Sequence[float],
              stride: float, min_window_px: int = 24) -> tuple[list[Box], np.ndarray]:
        """Every sliding window of ``image`` inside ``content`` ``(x, y, w, h)`` and its descriptor, computed once
        per window shape on the whole picture rather than once per window.

        For each window shape (height ``scale`` x the content's shorter side, width ``aspect`` x the height), the
        content is resized so that the window becomes 64 x 64 px (its size rounded to whole 8 px cells), gradients,
        cell histograms and normalised blocks are computed once, and each window's descriptor is a slice of them
        (the detector cascade of Dalal & Triggs 2005, section 5, computes HOG the same way). Windows step by
        ``stride`` x the window (at least one cell), and a last row and column sit flush with the content's right
        and bottom edges, so the whole picture is covered. Shapes larger than the content or smaller than
        ``min_window_px`` are skipped.

        Returns:
            ``(windows, descriptors)``: ``[(x, y, w, h)]`` in source pixels and ``(len(windows), D)`` float32 unit
            rows, as :meth:`describe` gives for the same windows up to resampling at their borders.
        """
        x0, y0, cw, ch = content
        side = min(cw, ch)
        boxes: list[Box] = []
        colours, shapes = [], []
        cells = SIZE // CELL
        step = max(1, int(round(stride * cells)))
        for scale in scales:
            wh = int(scale * side)
            for aspect in aspects:
                ww = int(wh * aspect)
                if ww > cw or wh > ch or min(ww, wh) < min_window_px:
                    continue
                rw = max(SIZE, int(round(cw * SIZE / ww / CELL)) * CELL)
                rh = max(SIZE, int(round(ch * SIZE / wh / CELL)) * CELL)
                small = cv2.resize(np.ascontiguousarray(image[y0:y0 + ch, x0:x0 + cw]), (rw, rh),
                                   interpolation=cv2.INTER_AREA)
                colour_cells = self._colour_cells(cv2.cvtColor(small, cv2.COLOR_RGB2HSV))
                blocks = self._hog(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)[None].astype(np.float32), flat=False)[0]
                hc, wc = rh // CELL, rw // CELL
                rows = sorted(set(range(0, hc - cells + 1, step)) | {hc - cells})
                cols = sorted(set(range(0, wc - cells + 1, step)) | {wc - cells})
                fx, fy = cw / rw, ch / rh
                ii = np.zeros((hc + 1, wc + 1, COLOUR_BINS), np.float64)
                ii[1:, 1:] = colour_cells.cumsum(0).cumsum(1)
                q = cells // 2
                r, c = np.asarray(rows)[:, None], np.asarray(cols)[None, :]
                quads = np.stack([ii[a + q, b + q] - ii[a, b + q] - ii[a + q, b] + ii[a, b]
                                  for a in (r, r + q) for b in (c, c + q)], axis=2)  # (rows, cols, 4, bins)
                colours.append(quads.reshape(-1, 4, COLOUR_BINS))
                views = np.lib.stride_tricks.sliding_window_view(blocks, (cells - 1, cells - 1), axis=(0, 1))
                shapes.append(views[np.ix_(rows, cols)].transpose(0, 1, 3, 4, 2).reshape(len(rows) * len(cols), -1))
                boxes.extend((x0 + int(round(j * CELL * fx)), y0 + int(round(i * CELL * fy)),
                              int(round(SIZE * fx)), int(round(SIZE * fy))) for i in rows for j in cols)
        if not boxes:
            return [], np.zeros((0, self.dimension), np.float32)
        return boxes, self._combine(self._pyramid(np.concatenate(colours)), np.concatenate(shapes))

    def _combine(self, colour: np.ndarray, shape: np.ndarray) -> np.ndarray:
        """Unit rows of ``[sqrt(w) * colour / |colour|, sqrt(1 - w) * sqrt(shape) / |sqrt(shape)|]``."""
        out = np.empty((len(colour), colour.shape[1] + shape.shape[1]), np.float32)
        head, tail = out[:, :colour.shape[1]], out[:, colour.shape[1]:]
        head[:] = colour
        np.sqrt(shape, out=tail)
        for part, weight in ((head, self.color_weight), (tail, 1.0 - self.color_weight)):
            part *= (np.sqrt(weight) / np.maximum(np.sqrt(np.einsum("ij,ij->i", part, part)), 1e-12))[:, None]
        out /= np.maximum(np.sqrt(np.einsum("ij,ij->i", out, out)), 1e-12)[:, None]
        return out

    @staticmethod
    def _colour_cells(hsv: np.ndarray) -> np.ndarray:
        """``(H / 8, W / 8, 80)`` hue-saturation and value histograms of each 8 px cell of an HSV picture."""
        h, w = hsv.shape[:2]
        hs = (hsv[..., 0].astype(np.intp) * HUE_BINS // 180) * SAT_BINS + hsv[..., 1].astype(np.intp) * SAT_BINS // 256
        val = HUE_BINS * SAT_BINS + hsv[..., 2].astype(np.intp) * VAL_BINS // 256
        cell = (np.arange(h)[:, None] // CELL) * (w // CELL) + np.arange(w)[None, :] // CELL
        n = (h // CELL) * (w // CELL) * COLOUR_BINS
        counts = np.bincount((cell * COLOUR_BINS + hs).ravel(), minlength=n) + np.bincount(
            (cell * COLOUR_BINS + val).ravel(), minlength=n)
        return counts.reshape(h // CELL, w // CELL, COLOUR_BINS).astype(np.float64)

    @staticmethod
    def _colour(hsv: np.ndarray) -> np.ndarray:
        """``(N, 5 * 80)`` colour pyramid of ``(N, 64, 64, 3)`` HSV windows (:meth:`_pyramid`)."""
        n, q = len(hsv), SIZE // CELL // 2
        cells = WindowDescriptor._colour_cells(hsv.reshape(n * SIZE, SIZE, 3)).reshape(n, 2 * q, 2 * q, COLOUR_BINS)
        quads = np.stack([cells[:, a:a + q, b:b + q].sum(axis=(1, 2)) for a in (0, q) for b in (0, q)], axis=1)
        return WindowDescriptor._pyramid(quads)

    @staticmethod
    def _pyramid(quads: np.ndarray) -> np.ndarray:
        """``(N, 5 * 80)`` from the ``(N, 4, 80)`` colour counts of each window's quadrants: the whole window's
        histograms first, then the quadrants'; each cell's two histograms (hue-saturation, value) sum to twice
        its pixels, so each is normalised to sum 1, then square-rooted."""
        cells = np.concatenate([quads.sum(axis=1, keepdims=True), quads], axis=1).astype(np.float32)
        totals = np.maximum(cells.sum(axis=2, keepdims=True) / 2.0, 1.0)
        return np.sqrt(cells / totals).reshape(len(quads), -1)

    @staticmethod
    def _hog(gray: np.ndarray, flat: bool = True) -> np.ndarray:
        """L2-Hys-normalised 2x2-cell blocks of 9-bin gradient histograms (8 px cells) of ``(N, H, W)`` grey
        pictures (``H``, ``W`` multiples of 8): ``(N, (H/8 - 1) * (W/8 - 1) * 36)``, or with ``flat=False``
        ``(N, H/8 - 1, W/8 - 1, 36)``."""
        n, height, width = gray.shape
        gx = np.zeros_like(gray)
        gy = np.zeros_like(gray)
        gx[:, :, 1:-1] = gray[:, :, 2:] - gray[:, :, :-2]
        gy[:, 1:-1, :] = gray[:, 2:, :] - gray[:, :-2, :]
        magnitude = np.hypot(gx, gy)
        angle = np.rad2deg(np.arctan2(gy, gx)) % 180.0
        bins = np.minimum((angle * ORIENTATIONS / 180.0).astype(np.intp), ORIENTATIONS - 1)
        hc, wc = height // CELL, width // CELL
        cell_id = (np.arange(height)[:, None] // CELL) * wc + np.arange(width)[None, :] // CELL
        index = ((np.arange(n)[:, None, None] * hc * wc + cell_id[None]) * ORIENTATIONS + bins).ravel()
        hist = np.bincount(index, weights=magnitude.ravel(), minlength=n * hc * wc * ORIENTATIONS)
        hist = hist.reshape(n, hc, wc, ORIENTATIONS) / (CELL * CELL)
        blocks = np.concatenate([hist[:, :-1, :-1], hist[:, :-1, 1:], hist[:, 1:, :-1], hist[:, 1:, 1:]], axis=3)
        blocks = blocks / np.sqrt((blocks ** 2).sum(axis=3, keepdims=True) + 1e-10)
        blocks = np.minimum(blocks, L2HYS_CLIP)
        blocks = blocks / np.sqrt((blocks ** 2).sum(axis=3, keepdims=True) + 1e-10)
        return (blocks.reshape(n, -1) if flat else blocks).astype(np.float32)
