"""Offline character detection with no downloaded weights: a detector trained at run time.

For each character, a small classifier is trained from its reference images and from the video itself:

1. **Foreground of each reference.** References are crops around the character, so GrabCut
   (Rother, Kolmogorov & Blake 2004, ``cv2.grabCut``) initialised with a rectangle inset from the crop's
   border separates the character from the background it was drawn on.
2. **Colour model.** A hue-saturation-value histogram of the references' foreground pixels against one of
   the video's pixels gives a per-colour log-likelihood ratio (histogram back-projection, Swain &
   Ballard 1991). For a window, the share of pixels whose ratio exceeds 1 (colours at least e times more
   likely on the character than in the film) measures how much of the character's palette it holds.
3. **Training set.** Positives: augmented references (random crops, flips, brightness and contrast) and
   copy-paste composites, the GrabCut foreground pasted onto background windows of the video (Dwibedi
   et al. 2017, "Cut, Paste and Learn"). Negatives: windows mined from frames spread over the video
   (the most reference-like tenth of each frame left out, since it may hold the character), and the
   other characters' references.
4. **Classifier.** Logistic regression (scikit-learn, balanced class weights) on a descriptor of each
   window: colour on a spatial pyramid plus HOG (:class:`core.embeddings.ColorTextureDescriptor`,
   64 px, 8 px cells), and the colour-model shares of the window and of its centre.
5. **Detection.** Windows of several sizes and aspect ratios slide over the frame's content (inside
   letterbox bars). A window's score is the geometric mean of the classifier's probability and the
   window's colour share, in [0, 1]; boxes above ``min_score`` go through non-maximum suppression.

The classifier learns what separates the character from *this* film's backgrounds. It needs no network
and no weights; it is slower than a learned detector (about 1 to 3 s per frame on 2 cores) and weaker on
characters seen from angles the references do not show.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np
from sklearn.linear_model import LogisticRegression

from core.config import DetectionConfig
from steps.boxes import iou, nms
from steps.records import BBox, Detection, SampledFrame
from steps.window_descriptor import WindowDescriptor

log = logging.getLogger(__name__)

HSV_BINS = (18, 8, 4)
MIN_VALUE = 48
"""Pixels darker than this (HSV value, 0..255) have no reliable hue and are left out of the colour model."""
LLR_THRESHOLD = 1.0
MIN_WINDOW_PX = 24
VOTE_RATIO = 0.9
CLASSIFIER_C = 10.0
"""Inverse regularisation strength of the logistic regression."""


def sliding_windows(content: BBox, scales: Sequence[float], aspects: Sequence[float], stride: float) -> list[BBox]:
    """Windows ``(x, y, w, h)`` covering ``content``: heights ``scale`` x the content's shorter side,
    widths ``aspect`` x height, stepped by ``stride`` x the window size. Windows wider or taller than the
    content, or smaller than 24 px, are skipped."""
    x0, y0, w, h = content
    side = min(w, h)
    out: list[BBox] = []
    for scale in scales:
        wh = int(scale * side)
        for aspect in aspects:
            ww = int(wh * aspect)
            if ww > w or wh > h or min(ww, wh) < MIN_WINDOW_PX:
                continue
            sx = max(4, int(ww * stride))
            sy = max(4, int(wh * stride))
            for y in range(y0, y0 + h - wh + 1, sy):
                for x in range(x0, x0 + w - ww + 1, sx):
                    out.append((x, y, ww, wh))
    return out


def foreground_mask(image: np.ndarray, inset: float = 0.05, iterations: int = 5) -> np.ndarray:
    """GrabCut foreground of a reference crop: ``(H, W)`` uint8, 1 on the character, 0 elsewhere.

    The initial rectangle is the crop inset by ``inset`` of its size on every side. Where GrabCut keeps
    less than 10% of the pixels (a failure), the whole inner rectangle is returned instead.
    """
    h, w = image.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    rect = (int(w * inset), int(h * inset), max(1, int(w * (1 - 2 * inset))), max(1, int(h * (1 - 2 * inset))))
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), mask, rect, bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT)
        fg = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    except cv2.error:
        fg = np.zeros((h, w), np.uint8)
    if fg.mean() < 0.1:
        fg = np.zeros((h, w), np.uint8)
        fg[rect[1]:rect[1] + rect[3], rect[0]:rect[0] + rect[2]] = 1
    return fg


def _hsv_index(image: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """Histogram bin of every pixel, and a mask of the pixels bright enough to have a colour."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    index = (hsv[..., 0].astype(np.intp) * HSV_BINS[0] // 180,
             hsv[..., 1].astype(np.intp) * HSV_BINS[1] // 256,
             hsv[..., 2].astype(np.intp) * HSV_BINS[2] // 256)
    return index, hsv[..., 2] >= MIN_VALUE


def _hsv_hist(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    (h, s, v), bright = _hsv_index(image)
    sel = bright if mask is None else bright & mask.astype(bool)
    h, s, v = h[sel], s[sel], v[sel]
    hist = np.zeros(HSV_BINS, np.float64)
    np.add.at(hist, (h.ravel(), s.ravel(), v.ravel()), 1.0)
    return hist


class ColourModel:
    """Log-likelihood ratio of each HSV colour: character foreground versus the film's pixels.

    ``llr[h, s, v] = log p(colour | character) - log p(colour | film)`` with add-one smoothing, on an
    18 x 8 x 8 hue-saturation-value grid.
    """

    def __init__(self, foreground_hist: np.ndarray, background_hist: np.ndarray) -> None:
        pf = (foreground_hist + 1.0) / (foreground_hist.sum() + foreground_hist.size)
        pb = (background_hist + 1.0) / (background_hist.sum() + background_hist.size)
        self.llr = np.log(pf / pb).astype(np.float32)

    def likely_map(self, image: np.ndarray) -> np.ndarray:
        """``(H, W)`` float32: 1 where the pixel's colour is at least e times likelier on the character."""
        index, bright = _hsv_index(image)
        return ((self.llr[index] > LLR_THRESHOLD) & bright).astype(np.float32)

    def shares(self, image: np.ndarray) -> np.ndarray:
        """``(2,)``: share of character-likely pixels in ``image`` and in its central half."""
        h, w = image.shape[:2]
        return _window_shares(self.likely_map(image), [(0, 0, w, h)])[0]


def _window_shares(likely: np.ndarray, windows: Sequence[BBox]) -> np.ndarray:
    """``(N, 2)`` shares of character-likely pixels in each window and its centre, via an integral image."""
    ii = cv2.integral(likely)

    def box_mean(x: np.ndarray, y: np.ndarray, w: np.ndarray, h: np.ndarray) -> np.ndarray:
        total = ii[y + h, x + w] - ii[y, x + w] - ii[y + h, x] + ii[y, x]
        return total / np.maximum(w * h, 1)

    arr = np.asarray(windows, dtype=np.intp).reshape(-1, 4)
    x, y, w, h = arr.T
    full = box_mean(x, y, w, h)
    centre = box_mean(x + w // 4, y + h // 4, np.maximum(w // 2, 1), np.maximum(h // 2, 1))
    return np.stack([full, centre], axis=1).astype(np.float32)


@dataclass
class _MinedFrame:
    frame: SampledFrame
    windows: list[BBox]
    desc: np.ndarray
    crops: list[np.ndarray]


@dataclass
class CharacterModel:
    """What the detector learned for one character."""

    name: str
    colour: ColourModel
    classifier: LogisticRegression
    positives: int
    negatives: int
    train_accuracy: float


class LocalDetector:
    """Sliding-window detector trained at run time from the references and the video (module docstring).

    Usage: ``detector = LocalDetector(references, config)``, then ``detector.fit(mining_frames)`` with
    frames spread over the input videos, then ``detector.detect(frame)`` for every sampled frame.

    Args:
        references: character name -> reference images, each ``(H, W, 3)`` uint8 RGB.
        config: window grid, mining, augmentation and threshold settings.
    """

    name = "local"

    def __init__(self, references: Mapping[str, Sequence[np.ndarray]], config: DetectionConfig) -> None:
        if not references:
            raise ValueError("LocalDetector needs at least one character with references")
        self.config = config
        self.references = {name: [np.ascontiguousarray(r) for r in refs] for name, refs in references.items()}
        self.descriptor = WindowDescriptor(color_weight=0.3)
        self.rng = np.random.default_rng(config.seed)
        self.masks = {name: [foreground_mask(r) for r in refs] for name, refs in self.references.items()}
        self.models: dict[str, CharacterModel] = {}

    # -- training -----------------------------------------------------------------------------------
    def _augment(self, image: np.ndarray, count: int) -> list[np.ndarray]:
        out = [image, np.ascontiguousarray(image[:, ::-1])]
        H, W = image.shape[:2]
        while len(out) < count:
            area = self.rng.uniform(0.6, 1.0)
            ratio = self.rng.uniform(0.8, 1.25)
            h = max(8, int(min(H, H * np.sqrt(area) * ratio)))
            w = max(8, int(min(W, W * np.sqrt(area) / ratio)))
            y = int(self.rng.integers(0, H - h + 1))
            x = int(self.rng.integers(0, W - w + 1))
            crop = image[y:y + h, x:x + w].astype(np.float32)
            crop = np.clip(crop * self.rng.uniform(0.75, 1.25) + self.rng.uniform(-20, 20), 0, 255).astype(np.uint8)
            if self.rng.random() < 0.5:
                crop = crop[:, ::-1]
            out.append(np.ascontiguousarray(crop))
        return out

    def _paste(self, background: np.ndarray, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        canvas = cv2.resize(background, (256, 256), interpolation=cv2.INTER_AREA).astype(np.float32)
        if self.rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        scale = self.rng.uniform(0.6, 1.0)
        h = int(256 * scale)
        w = max(8, min(256, int(h * image.shape[1] / image.shape[0])))
        y = int(self.rng.integers(0, 256 - h + 1))
        x = int(self.rng.integers(0, 256 - w + 1))
        fg = cv2.resize(np.ascontiguousarray(image), (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
        alpha = cv2.resize(np.ascontiguousarray(mask).astype(np.float32), (w, h))
        alpha = cv2.GaussianBlur(alpha, (5, 5), 0)[..., None]
        canvas[y:y + h, x:x + w] = fg * alpha + canvas[y:y + h, x:x + w] * (1 - alpha)
        return canvas.astype(np.uint8)

    def fit(self, frames: Iterable[SampledFrame]) -> dict[str, CharacterModel]:
        """Train one classifier per character from the references and background windows of ``frames``.

        ``frames`` should be spread over the input videos (the caller passes up to
        ``config.mining_frames``); only window descriptors and a few background crops are kept.

        Raises:
            ValueError: ``frames`` has no frame large enough for a window.
        """
        cfg = self.config
        names = list(self.references)
        film_hist = np.zeros(HSV_BINS, np.float64)
        mined: list[_MinedFrame] = []
        for frame in frames:
            x, y, w, h = frame.content_box
            film_hist += _hsv_hist(frame.image[y:y + h:4, x:x + w:4])
            wins, desc = self.descriptor.dense(frame.image, frame.content_box, cfg.window_scales,
                                               cfg.window_aspects, cfg.window_stride, MIN_WINDOW_PX)
            if not wins:
                continue
            pick = self.rng.choice(len(wins), size=min(len(wins), cfg.negatives_per_frame * 2), replace=False)
            picked = [wins[i] for i in pick]
            crops = [frame.image[y0:y0 + h0, x0:x0 + w0] for x0, y0, w0, h0 in picked]
            mined.append(_MinedFrame(frame, picked, desc[pick], crops))
        if not mined:
            raise ValueError("LocalDetector.fit needs at least one frame with room for a window")
        for name in names:
            fg_hist = np.zeros(HSV_BINS, np.float64)
            for ref, mask in zip(self.references[name], self.masks[name]):
                fg_hist += _hsv_hist(ref, mask)
            augmented = [a for ref in self.references[name]
                         for a in self._augment(ref, cfg.augmentations_per_reference)]
            ref_desc = self.descriptor.describe(augmented)
            negative_idx: list[np.ndarray] = []
            backgrounds: list[np.ndarray] = []
            for m in mined:
                order = np.argsort((m.desc @ ref_desc.T).max(axis=1))
                negative_idx.append(order[: int(len(order) * 0.9)][: cfg.negatives_per_frame])
                low = order[: max(1, int(len(order) * 0.3))]
                backgrounds.extend(m.crops[i] for i in self.rng.choice(low, size=min(6, len(low)), replace=False))
            refs, masks = self.references[name], self.masks[name]
            pasted = [self._paste(backgrounds[int(self.rng.integers(len(backgrounds)))], refs[k], masks[k])
                      for k in self.rng.integers(len(refs), size=cfg.copy_paste if backgrounds else 0)]
            others = [a for other in names if other != name for ref in self.references[other]
                      for a in self._augment(ref, max(2, cfg.augmentations_per_reference // 2))]
            pos_images = augmented + pasted
            pos_desc = np.vstack([ref_desc, self.descriptor.describe(pasted)]) if pasted else ref_desc
            other_desc = self.descriptor.describe(others) if others else None
            colour = ColourModel(fg_hist, film_hist)
            neg_parts = []
            for m, idx in zip(mined, negative_idx):
                shares = _window_shares(colour.likely_map(m.frame.image), [m.windows[i] for i in idx])
                neg_parts.append(np.hstack([m.desc[idx], shares]))
            if other_desc is not None:
                neg_parts.append(np.hstack([other_desc, np.stack([colour.shares(i) for i in others])]))
            positives = np.hstack([pos_desc, np.stack([colour.shares(i) for i in pos_images])])
            negatives = np.vstack(neg_parts)
            X = np.vstack([positives, negatives])
            y = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
            clf = LogisticRegression(C=CLASSIFIER_C, class_weight="balanced", max_iter=3000).fit(X, y)
            model = CharacterModel(name, colour, clf, len(positives), len(negatives), float(clf.score(X, y)))
            self.models[name] = model
            log.info("local detector: '%s' trained on %d positives and %d negatives (training accuracy %.3f)",
                     name, model.positives, model.negatives, model.train_accuracy)
        return self.models

    # -- detection ----------------------------------------------------------------------------------
    def _score(self, frame: SampledFrame) -> tuple[list[BBox], dict[str, np.ndarray], dict[str, np.ndarray]]:
        if not self.models:
            raise RuntimeError("LocalDetector used before fit(); train it on mining frames first")
        cfg = self.config
        wins, desc = self.descriptor.dense(frame.image, frame.content_box, cfg.window_scales, cfg.window_aspects,
                                           cfg.window_stride, MIN_WINDOW_PX)
        if not wins:
            return [], {name: np.zeros(0, np.float32) for name in self.models}, {}
        focus = focus_factor(frame.image, wins, cfg.focus_weight)
        scores, likely = {}, {}
        for name, model in self.models.items():
            likely[name] = model.colour.likely_map(frame.image)
            shares = _window_shares(likely[name], wins)
            prob = model.classifier.predict_proba(np.hstack([desc, shares]))[:, 1]
            scores[name] = (np.sqrt(prob * shares[:, 0]) * focus).astype(np.float32)
        return wins, scores, likely

    def window_scores(self, frame: SampledFrame) -> tuple[list[BBox], dict[str, np.ndarray]]:
        """Every window of ``frame`` and, per character, its ``(N,)`` scores in [0, 1]: the geometric mean of the
        classifier's probability and the window's colour share, times the window's focus factor
        (:func:`focus_factor`).

        Raises:
            RuntimeError: :meth:`fit` has not been called.
        """
        wins, scores, _ = self._score(frame)
        return wins, scores

    def detect(self, frame: SampledFrame, min_score: float | None = None) -> list[Detection]:
        """Detections of every character in ``frame`` (scores in [0, 1], at most ``max_per_frame`` each)
        scoring at least ``min_score`` (default ``config.min_score``).

        A window goes to a character only when its score beats every other character's score on the same window
        by ``config.identity_margin`` (an open-set decision: the classifier already weighs the character against
        the film's background). The kept box is refined by box voting (:func:`vote_box`), then widened to the
        character's whole visible extent (:func:`character_extent`).

        Raises:
            RuntimeError: :meth:`fit` has not been called.
        """
        wins, scores, likely = self._score(frame)
        found: list[Detection] = []
        floor = self.config.min_score if min_score is None else min_score
        for name, s in scores.items():
            rivals = [scores[o] for o in scores if o != name]
            best_rival = np.max(rivals, axis=0) if rivals else np.zeros_like(s)
            eligible = np.flatnonzero((s >= floor) & (s - best_rival >= self.config.identity_margin))
            cands = [Detection(name, wins[i], float(s[i])) for i in eligible]
            for d in nms(cands, self.config.nms_iou, self.config.max_per_frame):
                voted = vote_box(d, wins, s)
                found.append(replace(d, bbox=character_extent(voted, likely[name], frame.content_box)))
        return found


def focus_factor(image: np.ndarray, windows: Sequence[BBox], weight: float) -> np.ndarray:
    """``(N,)`` factors in (0, 1] that lower the score of out-of-focus windows.

    Films keep their characters in focus and let depth of field blur what lies in front of or behind them. A
    window's sharpness is the mean absolute Laplacian of its grey pixels (the focus measure of Nayar & Nakagawa
    1994, "Shape from focus"), relative to the median over the frame's windows; the factor is that ratio, capped
    at 1, to the power ``weight`` (0 disables it, giving 1 everywhere).
    """
    if weight <= 0 or not len(windows):
        return np.ones(len(windows), np.float32)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    sharp = _box_means(np.abs(cv2.Laplacian(gray, cv2.CV_32F, ksize=3)), windows)
    ratio = np.minimum(1.0, sharp / max(float(np.median(sharp)), 1e-6))
    return np.power(np.maximum(ratio, 1e-6), weight).astype(np.float32)


def _box_means(values: np.ndarray, windows: Sequence[BBox]) -> np.ndarray:
    ii = cv2.integral(values)
    x, y, w, h = np.asarray(windows, dtype=np.intp).reshape(-1, 4).T
    return (ii[y + h, x + w] - ii[y, x + w] - ii[y + h, x] + ii[y, x]) / np.maximum(w * h, 1)


def character_extent(box: BBox, likely: np.ndarray, content: BBox, grow_x: float = 0.5, grow_y: float = 1.0) -> BBox:
    """Widen a detection box to the character's whole visible extent.

    Window classifiers score the most character-like part of a figure (often the torso), not the figure. Around
    the box (grown by ``grow_x`` x its width on the left and right, ``grow_y`` x its height above and below,
    inside ``content``: a figure extends more up and down, to its head and feet, than sideways), the pixels of the character's colours
    (``likely``, the ``(H, W)`` map of :meth:`ColourModel.likely_map`) are closed morphologically and split into
    connected regions; the result is the bounding box of the regions that overlap the box by at least 2% of its
    area, which reaches the head and ears that share the body's colours. Where no region overlaps it, the box is
    returned unchanged.
    """
    x, y, w, h = (int(v) for v in box)
    cx, cy, cw, ch = (int(v) for v in content)
    x0, y0 = max(cx, int(x - grow_x * w)), max(cy, int(y - grow_y * h))
    x1, y1 = min(cx + cw, int(x + w + grow_x * w)), min(cy + ch, int(y + h + grow_y * h))
    roi = (likely[y0:y1, x0:x1] > 0).astype(np.uint8)
    if roi.size == 0:
        return box
    k = max(3, int(0.05 * min(w, h)) | 1)
    roi = cv2.morphologyEx(roi, cv2.MORPH_CLOSE, np.ones((k, k), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(roi, connectivity=8)
    inside = labels[y - y0:y - y0 + h, x - x0:x - x0 + w]
    counts = np.bincount(inside.ravel(), minlength=n)
    keep = [i for i in range(1, n) if counts[i] >= 0.02 * w * h]
    if not keep:
        return box
    left = min(stats[i, 0] for i in keep)
    top = min(stats[i, 1] for i in keep)
    right = max(stats[i, 0] + stats[i, 2] for i in keep)
    bottom = max(stats[i, 1] + stats[i, 3] for i in keep)
    return (x0 + int(left), y0 + int(top), int(right - left), int(bottom - top))


def vote_box(detection: Detection, windows: Sequence[BBox], scores: np.ndarray, ratio: float = VOTE_RATIO,
             min_iou: float = 0.2) -> BBox:
    """Refine a detection's box by box voting (Gidaris & Komodakis 2015, "Object detection via a
    multi-region & semantic segmentation-aware CNN model", section 4): the windows that score at least
    ``ratio`` x the detection's score and overlap it (IoU above ``min_iou``) vote, and the refined box is
    their score-weighted mean. Windows see only parts of a large character; their mean box covers more
    of it than the single best window."""
    arr = np.asarray(windows, dtype=np.float64).reshape(-1, 4)
    strong = np.flatnonzero(scores >= ratio * detection.score)
    voters = [i for i in strong if iou(windows[i], detection.bbox) > min_iou]
    if not voters:
        return detection.bbox
    w = scores[voters].astype(np.float64)
    x0 = np.average(arr[voters, 0], weights=w)
    y0 = np.average(arr[voters, 1], weights=w)
    x1 = np.average(arr[voters, 0] + arr[voters, 2], weights=w)
    y1 = np.average(arr[voters, 1] + arr[voters, 3], weights=w)
    return (int(round(x0)), int(round(y0)), max(1, int(round(x1 - x0))), max(1, int(round(y1 - y0))))
