"""Offline character detection: a detector trained at run time, with a pretrained backbone from an npm package.

One classifier is trained from the characters' reference images and from the video itself:

1. **Foreground of each reference.** References are crops around the character, so GrabCut
   (Rother, Kolmogorov & Blake 2004, ``cv2.grabCut``) initialised with a rectangle inset from the crop's
   border separates the character from the background it was drawn on.
2. **Colour model per character.** A hue-saturation-value histogram of the references' foreground pixels
   against one of the video's pixels gives a per-colour log-likelihood ratio (histogram back-projection, Swain &
   Ballard 1991). For a window, the share of pixels whose ratio exceeds 1 (colours at least e times more
   likely on the character than in the film) measures how much of the character's palette it holds.
3. **Training set.** Per character: augmented references (random crops, flips, brightness and contrast) and
   copy-paste composites, the GrabCut foreground pasted onto background windows of the video (Dwibedi
   et al. 2017, "Cut, Paste and Learn"). Background: windows mined from frames spread over the video, the
   least reference-like of them (the most reference-like tenth of each frame, for any character, is left
   out, since it may hold a character).
4. **Classifier.** One multinomial logistic regression (scikit-learn, balanced class weights) over the
   background and every character, on a descriptor of each window: colour on a spatial pyramid plus HOG
   (:class:`steps.window_descriptor.WindowDescriptor`, 64 px, 8 px cells, computed once per window shape on
   the whole frame) and every character's colour shares. Its softmax is the open-set decision between the
   characters and the background.
5. **Detection** (:meth:`LocalDetector.detect`). Windows of several sizes and aspect ratios slide over the
   frame's content (inside letterbox bars, reaching its right and bottom edges). Where the character is: the
   window of highest log-odds against the background (with a focus factor, :func:`focus_factor`), among
   windows where its probability beats every other character's by ``identity_margin``, refined by box voting
   and widened to the character's colour extent (:func:`character_extent`), so the box holds the head and
   ears, not only the torso. Whether it is there: the best window score inside that box (the geometric mean
   of the probability and the colour share, in [0, 1]) must reach ``min_score``, and the box's colours must
   match the references' proportions (:meth:`CharacterModel.colour_similarity` at least
   ``min_colour_similarity``); where it fails, the next most likely locations are tried.
6. **Pretrained features, where available.** With the MobileNetV3 backbone of :mod:`core.feature_backbone`, a
   kept box is widened further to the regions whose features match the character's references better than their
   backgrounds and the other characters (:mod:`steps.reference_features`): parts of the character that colour
   misses, such as fur in shade. This changes boxes only, never which detections are kept.

The classifier learns what separates the characters from *this* film's backgrounds. Without the backbone of step 6
(optional: ``detection.feature_model``) it needs no weights at all; on 2 cores it trains in 13 to 15 s and
scores a frame in 0.15 to 0.18 s, of which the backbone's features about 0.04 s (``bench/bench_detection.py``), and
it is weaker on characters seen from angles the references do not show.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
from sklearn.linear_model import LogisticRegression

from core.config import DetectionConfig
from core.feature_backbone import FeatureBackbone
from steps.boxes import iou, neighbourhood, nms
from steps.records import BBox, Detection, SampledFrame
from steps.reference_features import ReferenceContrast, extend_to_feature_regions
from steps.window_descriptor import WindowDescriptor

log = logging.getLogger(__name__)

HSV_BINS = (18, 8, 4)
MIN_VALUE = 48
"""Pixels darker than this (HSV value, 0..255) have no reliable hue and are left out of the colour model."""
LLR_THRESHOLD = 1.0
EXTENT_LLR = 0.0
"""A pixel belongs to a character's extent (:func:`character_extent`) where its colour is likelier on the character
than in the film (log-likelihood ratio above 0), a looser test than the window score's, so shaded fur and hair in
shadow stay inside the box."""
LOCATIONS_TRIED = 2
"""Beyond ``max_per_frame``, how many further locations (the next most likely windows after non-maximum
suppression) :meth:`LocalDetector.detect` tries, in order, when a more likely one fails the acceptance tests."""
MIN_WINDOW_PX = 24
VOTE_RATIO = 0.9
CLASSIFIER_C = 10.0
"""Inverse regularisation strength of the logistic regression."""


def foreground_mask(image: np.ndarray, inset: float = 0.05, iterations: int = 5, seed: int = 0) -> np.ndarray:
    """GrabCut foreground of a reference crop: ``(H, W)`` uint8, 1 on the character, 0 elsewhere.

    The initial rectangle is the crop inset by ``inset`` of its size on every side. Where GrabCut keeps
    less than 10% of the pixels (a failure), the whole inner rectangle is returned instead.

    GrabCut seeds its colour models by k-means on OpenCV's global random number generator, so the mask would
    depend on what ran before in the process (a second run of ``storyboard prepare`` in one process gave another
    detector); the generator is seeded with ``seed`` first (``cv2.setRNGSeed``, this thread's generator) to make
    it a function of ``image`` and ``seed`` alone.
    """
    h, w = image.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    rect = (int(w * inset), int(h * inset), max(1, int(w * (1 - 2 * inset))), max(1, int(h * (1 - 2 * inset))))
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(seed)
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
    index, bright = _hsv_index(image)
    return _index_hist(index, bright if mask is None else bright & mask.astype(bool))


def _index_hist(index: tuple[np.ndarray, ...], selected: np.ndarray) -> np.ndarray:
    """:data:`HSV_BINS` histogram of the pixels ``selected`` (a boolean map) of a picture's :func:`_hsv_index`."""
    h, s, v = (i[selected] for i in index)
    hist = np.zeros(HSV_BINS, np.float64)
    np.add.at(hist, (h.ravel(), s.ravel(), v.ravel()), 1.0)
    return hist


class ColourModel:
    """Log-likelihood ratio of each HSV colour: character foreground versus the film's pixels.

    ``llr[h, s, v] = log p(colour | character) - log p(colour | film)`` with add-one smoothing, on the
    :data:`HSV_BINS` (18 x 8 x 4) hue-saturation-value grid.
    """

    def __init__(self, foreground_hist: np.ndarray, background_hist: np.ndarray) -> None:
        pf = (foreground_hist + 1.0) / (foreground_hist.sum() + foreground_hist.size)
        pb = (background_hist + 1.0) / (background_hist.sum() + background_hist.size)
        self.llr = np.log(pf / pb).astype(np.float32)

    def likely_map(self, image: np.ndarray, threshold: float = LLR_THRESHOLD) -> np.ndarray:
        """``(H, W)`` float32: 1 where the pixel's colour is at least ``exp(threshold)`` times likelier on the
        character than in the film (default: e times)."""
        return (self.pixel_llr(*_hsv_index(image)) > threshold).astype(np.float32)

    def pixel_llr(self, index: tuple[np.ndarray, np.ndarray, np.ndarray], bright: np.ndarray) -> np.ndarray:
        """``(H, W)`` float32 log-likelihood ratio of each pixel of a picture given its :func:`_hsv_index`;
        ``-inf`` where the pixel is too dark to have a colour."""
        return np.where(bright, self.llr[index], -np.inf).astype(np.float32)

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
    column: int = 1
    """Column of this character in ``classifier.predict_proba`` (0 is the background)."""
    foreground_hist: np.ndarray | None = None
    """HSV histogram of the references' foreground pixels (:data:`HSV_BINS`)."""

    def colour_similarity(self, image: np.ndarray) -> float:
        """Bhattacharyya coefficient in [0, 1] between the colours of ``image`` (a box around a detection) and
        the references' foreground, both restricted to the character's colours (LLR above 1): 1 when the box
        holds the character's colours in the references' proportions. A tree trunk of one of a character's
        colours scores low; the character, with hair, skin and clothes in their usual shares, high (the
        similarity of Comaniciu, Ramesh & Meer 2003, "Kernel-based object tracking")."""
        if image.size == 0:
            return 1.0
        return self.hist_similarity(_hsv_hist(image))

    def hist_similarity(self, hist: np.ndarray) -> float:
        """:meth:`colour_similarity` of a box given its :data:`HSV_BINS` histogram."""
        if self.foreground_hist is None:
            return 1.0
        mine = self.colour.llr > LLR_THRESHOLD
        box = hist * mine
        ref = self.foreground_hist * mine
        if box.sum() <= 0 or ref.sum() <= 0:
            return 0.0
        return float(np.sqrt(box / box.sum() * ref / ref.sum()).sum())


class LocalDetector:
    """Sliding-window detector trained at run time from the references and the video (module docstring).

    Usage: ``detector = LocalDetector(references, config)``, then ``detector.fit(mining_frames)`` with
    frames spread over the input videos, then ``detector.detect(frame)`` for every sampled frame.

    Args:
        references: character name -> reference images, each ``(H, W, 3)`` uint8 RGB.
        config: window grid, mining, augmentation and threshold settings.
        backbone: pretrained features that widen kept boxes (module docstring, step 6); ``None`` runs without.
    """

    name = "local"

    def __init__(self, references: Mapping[str, Sequence[np.ndarray]], config: DetectionConfig,
                 backbone: FeatureBackbone | None = None) -> None:
        if not references:
            raise ValueError("LocalDetector needs at least one character with references")
        self.config = config
        self.references = {name: [np.ascontiguousarray(r) for r in refs] for name, refs in references.items()}
        self.descriptor = WindowDescriptor(color_weight=0.3)
        self.rng = np.random.default_rng(config.seed)
        self.masks = {name: [foreground_mask(r, seed=config.seed) for r in refs]
                      for name, refs in self.references.items()}
        self.features = ReferenceContrast(backbone, self.references, self.masks) if backbone is not None else None
        self.models: dict[str, CharacterModel] = {}
        self.last_evidence: dict[str, float] = {}
        """Best window score per character in the frame :meth:`detect` saw last, before its gates: a frame
        where it is low clearly shows no character (background windows for calibration)."""
        self.last_alternatives: list[Detection] = []
        """Locations of the frame :meth:`detect` saw last that passed its tests after the ``max_per_frame`` it
        returned, per character in order of likelihood: where the most likely location is wrong (a statue beside
        the character), temporal linking may follow the character to one of these (:mod:`steps.temporal`)."""

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
        """Train the classifier over the background and every character from the references and background
        windows of ``frames`` (module docstring).

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
        colours: dict[str, ColourModel] = {}
        fg_hists: dict[str, np.ndarray] = {}
        positives: dict[str, tuple[list[np.ndarray], np.ndarray]] = {}
        similarity = [np.zeros(len(m.windows)) for m in mined]
        for name in names:
            fg_hist = np.zeros(HSV_BINS, np.float64)
            for ref, mask in zip(self.references[name], self.masks[name]):
                fg_hist += _hsv_hist(ref, mask)
            colours[name] = ColourModel(fg_hist, film_hist)
            fg_hists[name] = fg_hist
            augmented = [a for ref in self.references[name]
                         for a in self._augment(ref, cfg.augmentations_per_reference)]
            ref_desc = self.descriptor.describe(augmented)
            backgrounds: list[np.ndarray] = []
            for k, m in enumerate(mined):
                sim = (m.desc @ ref_desc.T).max(axis=1)
                rank = np.argsort(np.argsort(sim)) / max(1, len(sim) - 1)  # 0 least, 1 most reference-like
                similarity[k] = np.maximum(similarity[k], rank)
                low = np.flatnonzero(rank <= 0.3)
                backgrounds.extend(m.crops[i] for i in self.rng.choice(low, size=min(6, len(low)), replace=False))
            refs, masks = self.references[name], self.masks[name]
            pasted = [self._paste(backgrounds[int(self.rng.integers(len(backgrounds)))], refs[k], masks[k])
                      for k in self.rng.integers(len(refs), size=cfg.copy_paste if backgrounds else 0)]
            pos_desc = np.vstack([ref_desc, self.descriptor.describe(pasted)]) if pasted else ref_desc
            positives[name] = (augmented + pasted, pos_desc)
        # Background: in each mining frame, the windows least like any character's references; the most
        # reference-like tenth (for any character) is left out, since it may hold a character.
        neg_parts = []
        for k, m in enumerate(mined):
            order = np.argsort(similarity[k])
            idx = order[: int(len(order) * 0.9)][: cfg.negatives_per_frame]
            index, bright = _hsv_index(m.frame.image)  # once per frame, shared by every character's colour model
            picked = [m.windows[i] for i in idx]
            shares = np.hstack([_window_shares((colours[n].pixel_llr(index, bright) > LLR_THRESHOLD).astype(np.float32),
                                               picked) for n in names])
            neg_parts.append(np.hstack([m.desc[idx], shares]))
        negatives = np.vstack(neg_parts)
        X = [negatives]
        y = [np.zeros(len(negatives), np.intp)]
        for j, name in enumerate(names, start=1):
            images, desc = positives[name]
            shares = np.stack([np.concatenate([colours[n].shares(img) for n in names]) for img in images])
            X.append(np.hstack([desc, shares]))
            y.append(np.full(len(images), j, np.intp))
        features, labels = np.vstack(X), np.concatenate(y)
        clf = LogisticRegression(C=CLASSIFIER_C, class_weight="balanced", max_iter=3000).fit(features, labels)
        accuracy = float(clf.score(features, labels))
        for j, name in enumerate(names, start=1):
            model = CharacterModel(name, colours[name], clf, int((labels == j).sum()), int((labels != j).sum()),
                                   accuracy, column=j, foreground_hist=fg_hists[name])
            self.models[name] = model
            log.info("local detector: '%s' trained on %d positives against %d background windows and the other "
                     "characters (training accuracy %.3f)", name, model.positives, len(negatives), accuracy)
        return self.models

    # -- detection ----------------------------------------------------------------------------------
    def _score(self, frame: SampledFrame) -> _FrameScores:
        if not self.models:
            raise RuntimeError("LocalDetector used before fit(); train it on mining frames first")
        cfg = self.config
        wins, desc = self.descriptor.dense(frame.image, frame.content_box, cfg.window_scales, cfg.window_aspects,
                                           cfg.window_stride, MIN_WINDOW_PX)
        out = _FrameScores(wins)
        if not wins:
            return out
        focus = focus_factor(frame.image, wins, cfg.focus_weight)
        out.hsv_index, out.bright = _hsv_index(frame.image)
        shares = {}
        for name, model in self.models.items():
            out.llr[name] = model.colour.pixel_llr(out.hsv_index, out.bright)
            shares[name] = _window_shares((out.llr[name] > LLR_THRESHOLD).astype(np.float32), wins)
        classifier = next(iter(self.models.values())).classifier
        proba = _predict_proba(classifier, desc, np.hstack([shares[n] for n in self.models]))
        for name, model in self.models.items():
            prob = proba[:, model.column]
            out.probability[name] = (prob * focus).astype(np.float32)
            out.log_odds[name] = (np.log(np.maximum(prob, 1e-12)) - np.log(np.maximum(proba[:, 0], 1e-12))
                                  + np.log(np.maximum(focus, 1e-6))).astype(np.float32)
            out.score[name] = (np.sqrt(prob * shares[name][:, 0]) * focus).astype(np.float32)
        return out

    def detect(self, frame: SampledFrame, min_score: float | None = None) -> list[Detection]:
        """Detections of every character in ``frame`` (scores in [0, 1], at most ``max_per_frame`` each)
        scoring at least ``min_score`` (default ``config.min_score``).

        Two cues decide, each where it is strongest:

        1. **Where**: the window the classifier finds most likely the character rather than the background (the
           log-odds of its probability against the background's, plus the log of the focus factor: unlike
           probabilities near 1, log-odds do not saturate), among windows where its probability (times the
           focus factor) beats every other character's on the same window by ``config.identity_margin`` (an
           open-set decision; the classifier itself weighs the character against the film's background). Its box
           is refined by box voting (:func:`vote_box`) and widened to the character's whole visible extent
           (:func:`character_extent`).
        2. **Whether**: the detection's score is the best window score (the geometric mean of the classifier's
           probability and the window's colour share, times the focus factor) among the windows inside that
           extent. A background the classifier mistakes
           for the character rarely also holds the character's colours, where a character does. And the extent
           must hold the character's colours in the references' proportions
           (:meth:`CharacterModel.colour_similarity` at least ``config.min_colour_similarity``), which a tree
           trunk or a rock of one of its colours does not. Where the most likely location fails these tests, the
           next ones (up to :data:`LOCATIONS_TRIED` more, in order of likelihood) are tried, and the first that
           passes is kept (the bunny seen from below at 12 s of ``bbb_30s.mp4``: the most likely box takes in the
           sky and fails the colour test, the next one holds him). Further locations that pass are left in
           :attr:`last_alternatives`, for temporal linking to follow a character there (:mod:`steps.temporal`).

        With a feature backbone, every kept box (alternatives included) is then widened to the character's regions
        of pretrained features (:func:`steps.reference_features.extend_to_feature_regions`).

        Raises:
            RuntimeError: :meth:`fit` has not been called.
        """
        scored = self._score(frame)
        self.last_evidence = {name: float(v.max(initial=0.0)) for name, v in scored.score.items()}
        found: list[Detection] = []
        self.last_alternatives = []
        floor = self.config.min_score if min_score is None else min_score
        windows = np.asarray(scored.windows, dtype=np.intp).reshape(-1, 4)
        position = {box: i for i, box in enumerate(scored.windows)}
        contrast: dict[str, np.ndarray] | None = None  # this frame's maps, made when a first box is kept
        for name, where in scored.probability.items():
            rivals = [scored.probability[o] for o in scored.probability if o != name]
            best_rival = np.max(rivals, axis=0) if rivals else np.zeros_like(where)
            eligible = np.flatnonzero(where - best_rival >= self.config.identity_margin)
            rank = scored.log_odds[name]  # does not saturate where probabilities do
            cands = [Detection(name, scored.windows[i], float(rank[i])) for i in eligible]
            accepted = []
            extent_map = scored.llr.get(name, np.zeros(0)) > EXTENT_LLR
            for d in nms(cands, self.config.nms_iou, self.config.max_per_frame + LOCATIONS_TRIED):
                box = character_extent(vote_box(d, scored.windows, where), extent_map, frame.content_box)
                x, y, w, h = box
                inside = ((windows[:, 0] >= x) & (windows[:, 1] >= y) & (windows[:, 0] + windows[:, 2] <= x + w)
                          & (windows[:, 1] + windows[:, 3] <= y + h))
                score = float(max(scored.score[name][inside].max(initial=0.0), scored.score[name][position[d.bbox]]))
                in_box = tuple(i[y:y + h, x:x + w] for i in scored.hsv_index)
                similarity = self.models[name].hist_similarity(_index_hist(in_box, scored.bright[y:y + h, x:x + w]))
                if score >= floor and similarity >= self.config.min_colour_similarity:
                    accepted.append(replace(d, bbox=box, score=score))
            if accepted and self.features is not None:
                if contrast is None:
                    contrast = self.features.maps(frame.image, frame.content_box)
                accepted = [replace(d, bbox=extend_to_feature_regions(d.bbox, contrast[name], frame.content_box))
                            for d in accepted]
            found.extend(accepted[:self.config.max_per_frame])
            self.last_alternatives.extend(accepted[self.config.max_per_frame:])
        return found


def _predict_proba(classifier: LogisticRegression, desc: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """``classifier.predict_proba(np.hstack([desc, extra]))`` without copying ``desc`` (thousands of rows of 2,164
    features per frame): the linear scores of both blocks, then the softmax (sigmoid for two classes) that
    scikit-learn's multinomial logistic regression applies."""
    coef = classifier.coef_.astype(np.float32)
    d = desc.shape[1]
    z = desc @ coef[:, :d].T + extra.astype(np.float32) @ coef[:, d:].T + classifier.intercept_.astype(np.float32)
    if z.shape[1] == 1:
        p = 1.0 / (1.0 + np.exp(-z[:, 0]))
        return np.stack([1.0 - p, p], axis=1)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class _FrameScores:
    """Figures of one frame, computed once and shared by every character and candidate location."""

    windows: list[BBox]
    probability: dict[str, np.ndarray] = field(default_factory=dict)
    """Per character: classifier probability x focus factor, ``(N,)``."""
    score: dict[str, np.ndarray] = field(default_factory=dict)
    """Per character: sqrt(probability x colour share) x focus factor, ``(N,)`` in [0, 1]."""
    log_odds: dict[str, np.ndarray] = field(default_factory=dict)
    """Per character: log(p(character) / p(background)) + log(focus factor), ``(N,)``; ranks the windows."""
    llr: dict[str, np.ndarray] = field(default_factory=dict)
    """Per character: each pixel's colour log-likelihood ratio, ``(H, W)`` (:meth:`ColourModel.pixel_llr`)."""
    hsv_index: tuple[np.ndarray, ...] = ()
    """The frame's :func:`_hsv_index` bins, each ``(H, W)``."""
    bright: np.ndarray | None = None
    """``(H, W)``: pixels bright enough to have a colour."""


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


def character_extent(box: BBox, likely: np.ndarray, content: BBox, grow_x: float = 0.5,
                     grow_y: float = 1.0) -> BBox:
    """Widen a detection box to the character's whole visible extent.

    Window classifiers score the most character-like part of a figure (often the torso), not the figure. Around
    the box (grown by ``grow_x`` x its width on the left and right, ``grow_y`` x its height above and below,
    inside ``content``: a figure extends more up and down, to its head and feet, than sideways), the pixels of the
    character's colours (``likely``, the ``(H, W)`` map of :meth:`ColourModel.likely_map`) are closed
    morphologically and split into connected regions; the result is the bounding box of the regions that overlap
    the box by at least 2% of its area, which reaches the head and ears that share the body's colours. Where no
    region overlaps it, the box is returned unchanged.
    """
    x, y, w, h = (int(v) for v in box)
    x0, y0, x1, y1 = neighbourhood(box, content, grow_x, grow_y)
    roi = (likely[y0:y1, x0:x1] > 0).astype(np.uint8)
    if roi.size == 0:
        return box
    k = max(3, int(0.05 * min(w, h)) | 1)
    roi = cv2.morphologyEx(roi, cv2.MORPH_CLOSE, np.ones((k, k), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(roi, connectivity=8)
    inside = labels[max(0, y - y0):max(0, y - y0 + h), max(0, x - x0):max(0, x - x0 + w)]
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
    w = scores[voters].astype(np.float64)
    if not voters or w.sum() <= 0:
        return detection.bbox
    x0 = np.average(arr[voters, 0], weights=w)
    y0 = np.average(arr[voters, 1], weights=w)
    x1 = np.average(arr[voters, 0] + arr[voters, 2], weights=w)
    y1 = np.average(arr[voters, 1] + arr[voters, 3], weights=w)
    return (int(round(x0)), int(round(y0)), max(1, int(round(x1 - x0))), max(1, int(round(y1 - y0))))
