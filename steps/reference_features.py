"""Where a frame looks like a character's references, by nearest-neighbour matching of pretrained features.

Each reference image (and its mirror image) is split by its foreground mask into feature cells of the character and
cells of its background (:class:`core.feature_backbone.FeatureBackbone`: 16 x 16 input pixels a cell). A frame cell's
**contrast** for a character is the mean cosine similarity of its five nearest character cells, minus the larger of
the same figure over the references' background cells and over every other character's cells: positive where the
cell is more like the character than like anything else the references show. This is the support-set matching of
few-shot segmentation (Shaban et al. 2017, "One-shot learning for semantic segmentation"; Wang et al. 2019, "PANet:
few-shot image semantic segmentation with prototype alignment"), with nearest neighbours in place of a mean
prototype, since a character's cells (face, fur, clothes) are far from one mean.

:func:`extend_to_feature_regions` uses it to widen a detection to the parts of the character that colour misses:
in the bunny's extreme close-ups of ``bbb_30s.mp4`` (20, 26 and 27 s) his face and fur are in blue shade, the
colour model puts them with the sky and the flowers, and the detection box held his lit cheek and hand only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from core.feature_backbone import FeatureBackbone
from steps.boxes import clip_box, neighbourhood
from steps.records import BBox

NEIGHBOURS = 5
"""Nearest reference cells averaged for each similarity."""
FOREGROUND_SHARE = 0.6
"""A reference cell is the character's where its mask covers at least this share of it."""
BACKGROUND_SHARE = 0.1
"""A reference cell is background where its mask covers at most this share of it."""
CONTRAST_THRESHOLD = 0.1
"""Contrast (a difference of cosine similarities, in [-2, 2]) at or above which a cell counts as the character's in
:func:`extend_to_feature_regions`. Measured on every second of the dev clips (each frame's crop judged against
``boxes.json``): 0.07, 0.10 and 0.13 give the same verdicts, all 25 bunny crops correct (with the backbone's input
at 512 px instead of :data:`core.feature_backbone.LONG_SIDE`, 0.13 leaves two of the four close-ups cut). Sintel's
verdicts do not move between 0.07 and 0.13."""
MIN_REGION_SHARE = 0.03
"""Smallest region, as a share of the picture, that :func:`extend_to_feature_regions` adds to a box."""


def _top_mean(bank: np.ndarray, cells: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """``(N,)`` mean of each cell's ``k`` highest cosine similarities to ``bank`` (``(M, D)`` and ``(N, D)`` unit
    rows)."""
    sims = cells @ bank.T
    k = min(k, bank.shape[0])
    return np.partition(sims, sims.shape[1] - k, axis=1)[:, -k:].mean(axis=1)


class ReferenceContrast:
    """Per-character contrast maps of frames against the references (module docstring).

    Args:
        backbone: the feature extractor.
        references: character name -> reference images, each ``(H, W, 3)`` uint8 RGB.
        masks: character name -> one ``(H, W)`` bool foreground mask per reference (as
            :func:`steps.local_detector.foreground_mask` gives).

    Raises:
        ValueError: a character with no reference cells left after masking.
    """

    def __init__(self, backbone: FeatureBackbone, references: Mapping[str, Sequence[np.ndarray]],
                 masks: Mapping[str, Sequence[np.ndarray]]) -> None:
        self.backbone = backbone
        self.characters: dict[str, np.ndarray] = {}
        background = []
        for name, images in references.items():
            cells = []
            for image, mask in zip(images, masks[name]):
                for flip in (False, True):
                    img = np.ascontiguousarray(image[:, ::-1]) if flip else image
                    msk = mask[:, ::-1] if flip else mask
                    feats, _ = backbone.features(img)
                    share = cv2.resize(msk.astype(np.float32), (feats.shape[1], feats.shape[0]),
                                       interpolation=cv2.INTER_AREA)
                    cells.append(feats[share >= FOREGROUND_SHARE])
                    if not flip:  # a character faces either way; its backgrounds need no mirror images
                        background.append(feats[share <= BACKGROUND_SHARE])
            bank = np.concatenate(cells) if cells else np.zeros((0, 1), np.float32)
            if not len(bank):
                raise ValueError(f"character {name!r}: its references' foreground masks cover no feature cell; "
                                 "use references where the character fills more of the picture")
            self.characters[name] = bank
        self.background = np.concatenate(background)

    def maps(self, image: np.ndarray, content: BBox) -> dict[str, np.ndarray]:
        """Contrast of every pixel of ``image`` for each character.

        Args:
            image: ``(H, W, 3)`` uint8 RGB frame.
            content: the picture inside letterbox bars, ``(x, y, w, h)``; only it is read.

        Returns:
            character name -> ``(H, W)`` float32 contrast in [-2, 2] (bilinear between cell centres), -2 outside
            ``content``.
        """
        x, y, w, h = (int(v) for v in content)
        feats, cell = self.backbone.features(np.ascontiguousarray(image[y:y + h, x:x + w]))
        flat = feats.reshape(-1, feats.shape[2])
        near = {name: _top_mean(bank, flat) for name, bank in self.characters.items()}
        rest = _top_mean(self.background, flat) if len(self.background) else np.full(len(flat), -1.0, np.float32)
        out = {}
        for name, own in near.items():
            rivals = np.maximum.reduce([rest] + [v for o, v in near.items() if o != name])
            grid = (own - rivals).reshape(feats.shape[:2]).astype(np.float32)
            full = cv2.resize(grid, (int(round(grid.shape[1] * cell)), int(round(grid.shape[0] * cell))),
                              interpolation=cv2.INTER_LINEAR)
            picture = np.full(image.shape[:2], -2.0, np.float32)
            hh, ww = min(h, full.shape[0]), min(w, full.shape[1])
            picture[y:y + hh, x:x + ww] = full[:hh, :ww]
            out[name] = picture
        return out


def extend_to_feature_regions(box: BBox, contrast: np.ndarray, content: BBox, grow_x: float = 0.5,
                              grow_y: float = 1.0, threshold: float = CONTRAST_THRESHOLD,
                              min_share: float = MIN_REGION_SHARE) -> BBox:
    """Widen a detection box to the regions of the picture whose features are the character's.

    The pixels of ``contrast`` at or above ``threshold`` are split into connected regions; a region is added, whole,
    when it covers at least ``min_share`` of ``content`` and reaches into the box grown by ``grow_x`` x its width
    left and right and ``grow_y`` x its height above and below (the neighbourhood
    :func:`steps.local_detector.character_extent` searches). The result is the bounding box of the box and the added
    regions, inside ``content``; with no such region, ``box`` itself.

    At 21 s of ``bbb_30s.mp4`` the box holds the bunny's lit cheek and hand (x 136 to 354) and his shaded face is a
    region from x 411 to 593, apart from the box but inside its neighbourhood: the widened box holds his head.

    Args:
        box: ``(x, y, w, h)`` in source pixels.
        contrast: ``(H, W)`` map of :meth:`ReferenceContrast.maps`.
        content: ``(x, y, w, h)``, the picture inside letterbox bars.
    """
    x, y, w, h = (int(v) for v in box)
    x0, y0, x1, y1 = neighbourhood(box, content, grow_x, grow_y)
    n, labels, stats, _ = cv2.connectedComponentsWithStats((contrast >= threshold).astype(np.uint8), connectivity=8)
    near = np.bincount(labels[y0:y1, x0:x1].ravel(), minlength=n)
    area = min_share * float(content[2]) * float(content[3])
    keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= area and near[i] > 0]
    if not keep:
        return box
    left = min([x] + [int(stats[i, 0]) for i in keep])
    top = min([y] + [int(stats[i, 1]) for i in keep])
    right = max([x + w] + [int(stats[i, 0] + stats[i, 2]) for i in keep])
    bottom = max([y + h] + [int(stats[i, 1] + stats[i, 3]) for i in keep])
    return clip_box((left, top, right - left, bottom - top), content) or box
