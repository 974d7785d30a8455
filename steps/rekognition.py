"""Character detection with Amazon Rekognition DetectLabels boxes and identity by embedding similarity.

Rekognition finds *objects* (``Person``, ``Animal``, ``Rabbit`` ...) with instance bounding boxes but does
not know the film's characters. :class:`RekognitionDetector` therefore:

1. sends the frame's picture area (``frame.content_box``, letterbox bars removed) as JPEG bytes to
   ``detect_labels``, asking only for the configured label names (``detection.rekognition_labels``)
   at ``detection.rekognition_min_confidence`` percent;
2. takes every ``Instances[].BoundingBox`` of those labels (ratios of the sent image), converts it to
   source-frame pixels ``[x, y, w, h]`` (adding back the content box offset) and drops near-identical
   boxes that several labels give for one object (``Rabbit``, ``Animal``, ``Mammal``);
3. crops each box from the source frame and embeds the crops with the configured
   :class:`core.embeddings.ImageEmbedder`;
4. scores each crop against each character's reference embeddings: the mean of its two highest
   reference cosine similarities (the single similarity where a character has one reference), and
   assigns the best-scoring character where that score is at least ``detection.identity_threshold``
   (and ``detection.min_score``). The detection's ``score`` is that similarity, clipped to [0, 1];
   Rekognition's label confidence only gates candidates through ``MinConfidence``;
5. applies per-character non-maximum suppression (``detection.nms_iou``) and keeps at most
   ``detection.max_per_frame`` boxes per character (:func:`steps.boxes.nms`).

Image limits (Amazon Rekognition developer guide, "Guidelines and quotas"): image bytes passed to an
API at most 5 MB; DetectLabels images at most 10,000 px a side and at least 80 px a side; JPEG or PNG.
The picture is downscaled/re-encoded until it fits and small pictures are upscaled to 80 px; box ratios
are independent of that scaling.

Labels without instance boxes (``Cartoon``, scene labels) contribute no candidates. Where Rekognition's
general labels miss a stylised character entirely, use the local detector or Rekognition Custom Labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from core.embeddings import ImageEmbedder, cosine_matrix
from core.errors import InputError
from core.images import check_rgb_image, encode_image
from steps.boxes import clip_box, iou, nms, ratio_box_to_pixels
from steps.records import BBox, Detection, SampledFrame

if TYPE_CHECKING:
    from core.config import AwsConfig, DetectionConfig

REKOGNITION_MAX_IMAGE_BYTES = 5 * 1024 * 1024
"""Image bytes passed as an API parameter: at most 5 MB (Rekognition "Guidelines and quotas")."""
REKOGNITION_MIN_SIDE_PX = 80
"""Smallest image width and height Rekognition Image accepts ("Guidelines and quotas")."""
REKOGNITION_MAX_SIDE_PX = 10_000
"""Largest DetectLabels image width and height ("Guidelines and quotas")."""
REKOGNITION_MAX_LABEL_FILTERS = 100
"""``Settings.GeneralLabels.LabelInclusionFilters`` holds at most 100 names (Rekognition API reference)."""
MIN_CANDIDATE_SIDE_PX = 8
"""Instance boxes thinner than this in source pixels are ignored (nothing to embed)."""
DUPLICATE_CANDIDATE_IOU = 0.9
"""Instance boxes of different labels overlapping this much are one object and embedded once."""


@dataclass
class RekognitionStats:
    """Counters over the detector's life: frames sent, instance boxes seen, candidates embedded, kept."""

    frames: int = 0
    instances: int = 0
    candidates: int = 0
    assigned: int = 0
    labels_seen: dict[str, int] = field(default_factory=dict)


def identity_scores(crop_embeddings: np.ndarray,
                    reference_embeddings: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Score crops against each character's references.

    Args:
        crop_embeddings: ``(N, D)`` unit rows.
        reference_embeddings: character name -> ``(K, D)`` unit rows (K >= 1).

    Returns:
        character name -> ``(N,)`` float32 scores in [-1, 1]: for each crop, the mean of its two highest
        cosine similarities to the character's references (the highest alone where K == 1). Averaging
        two references makes a crop that matches one reference by accident score lower than one that
        resembles the character from several views.
    """
    scores: dict[str, np.ndarray] = {}
    for character, refs in reference_embeddings.items():
        sims = cosine_matrix(crop_embeddings, refs)
        top = np.sort(sims, axis=1)[:, ::-1][:, :2]
        scores[character] = top.mean(axis=1).astype(np.float32)
    return scores


class RekognitionDetector:
    """Amazon Rekognition DetectLabels boxes plus identity by similarity to reference images.

    Implements :class:`steps.detection.CharacterDetector`.

    Args:
        references: character name -> reference images, each ``(H, W, 3)`` uint8 RGB (at least one each).
        embedder: image embedder for references and candidate crops (local, Titan or ONNX).
        config: the ``detection`` settings.
        client: a ``rekognition`` client; default :func:`core.aws.make_client` with ``aws``.
        aws: region, profile, retries for the default client.

    Raises:
        InputError: no characters, a character without references, or a reference that is not RGB uint8.
        ValueError: more than 100 label names in ``config.rekognition_labels``.
    """

    name = "rekognition"

    def __init__(self, references: Mapping[str, Sequence[np.ndarray]], embedder: ImageEmbedder,
                 config: DetectionConfig, client: Any = None, aws: AwsConfig | None = None) -> None:
        if not references:
            raise InputError("no character references given; every character needs at least one reference image")
        for character, images in references.items():
            if len(images) == 0:
                raise InputError(f"character {character!r} has no reference images; add images to its "
                                 "references (pipeline.yaml characters[].references or --characters DIR/<name>/)")
            for i, image in enumerate(images):
                check_rgb_image(image, f"reference {i} of character {character!r}")
        if not config.rekognition_labels:
            raise ValueError("detection.rekognition_labels is empty; name the DetectLabels labels whose boxes "
                             "are candidate characters (for example Person, Animal, Cartoon)")
        if len(config.rekognition_labels) > REKOGNITION_MAX_LABEL_FILTERS:
            raise ValueError(f"detection.rekognition_labels has {len(config.rekognition_labels)} names; "
                             f"DetectLabels accepts at most {REKOGNITION_MAX_LABEL_FILTERS}")
        if client is None:
            from core.aws import client_from_config

            client = client_from_config("rekognition", aws)
        self.client = client
        self.embedder = embedder
        self.config = config
        self.labels = list(dict.fromkeys(config.rekognition_labels))
        self._wanted = {label.casefold() for label in self.labels}
        self.threshold = max(float(config.identity_threshold), float(config.min_score))
        self.reference_embeddings = {c: embedder.embed_images(list(images)) for c, images in references.items()}
        self.stats = RekognitionStats()

    def request(self, region: np.ndarray) -> dict[str, Any]:
        """The ``detect_labels`` keyword arguments for a picture ``region`` (``(H, W, 3)`` uint8 RGB).

        ``Image.Bytes`` is JPEG (quality 90) of at most 5 MB, at least 80 px a side;
        ``Features=["GENERAL_LABELS"]`` with ``LabelInclusionFilters`` = the configured label names.
        """
        encoded = encode_image(region, max_bytes=REKOGNITION_MAX_IMAGE_BYTES, image_format="jpeg",
                               max_side=REKOGNITION_MAX_SIDE_PX, min_side=REKOGNITION_MIN_SIDE_PX,
                               jpeg_quality=90, what="frame content region")
        return {
            "Image": {"Bytes": encoded.data},
            "MinConfidence": float(self.config.rekognition_min_confidence),
            "Features": ["GENERAL_LABELS"],
            "Settings": {"GeneralLabels": {"LabelInclusionFilters": list(self.labels)}},
        }

    def candidates(self, response: Mapping[str, Any], content_box: BBox) -> list[tuple[str, float, BBox]]:
        """Instance boxes of the configured labels in a DetectLabels ``response``, in source pixels.

        Returns ``(label, confidence percent, (x, y, w, h))`` tuples, highest confidence first, with
        boxes of different labels that overlap by IoU >= 0.9 merged into the first (one object).
        """
        found: list[tuple[str, float, BBox]] = []
        for label in response.get("Labels", []):
            name = str(label.get("Name", ""))
            self.stats.labels_seen[name] = self.stats.labels_seen.get(name, 0) + 1
            if name.casefold() not in self._wanted:
                continue
            for instance in label.get("Instances", []) or []:
                box = instance.get("BoundingBox") or {}
                if not all(k in box for k in ("Left", "Top", "Width", "Height")):
                    continue
                self.stats.instances += 1
                pixels = ratio_box_to_pixels(box["Left"], box["Top"], box["Width"], box["Height"], content_box)
                if pixels is None or min(pixels[2], pixels[3]) < MIN_CANDIDATE_SIDE_PX:
                    continue
                confidence = float(instance.get("Confidence", label.get("Confidence", 0.0)))
                found.append((name, confidence, pixels))
        found.sort(key=lambda c: (-c[1], c[0], c[2]))
        unique: list[tuple[str, float, BBox]] = []
        for cand in found:
            if all(iou(cand[2], kept[2]) < DUPLICATE_CANDIDATE_IOU for kept in unique):
                unique.append(cand)
        return unique

    def detect(self, frame: SampledFrame, min_score: float | None = None) -> list[Detection]:
        """Detect configured characters in ``frame``; ``min_score`` overrides ``detection.min_score``
        (candidates for temporal rescoring are asked for with a lower floor).

        Returns:
            Detections with ``bbox`` in source pixels inside ``frame.content_box`` and ``score`` = the
            identity similarity in [0, 1]; at most ``max_per_frame`` per character, highest score first;
            an empty list where nothing passes ``identity_threshold``.

        Raises:
            InputError: the frame image is not RGB uint8 or its content box lies outside it.
            botocore.exceptions.ClientError: Rekognition refused the request after botocore's retries.
        """
        image = check_rgb_image(frame.image, f"frame {frame.frame_index} of {frame.video}")
        height, width = image.shape[:2]
        content = clip_box(frame.content_box, (0, 0, width, height))
        if content is None or tuple(content) != tuple(int(v) for v in frame.content_box):
            raise InputError(f"frame {frame.frame_index} of {frame.video}: content box {list(frame.content_box)} "
                             f"is not inside the {width}x{height} image")
        x0, y0, cw, ch = content
        response = self.client.detect_labels(**self.request(image[y0:y0 + ch, x0:x0 + cw]))
        self.stats.frames += 1
        cands = self.candidates(response, content)
        if not cands:
            return []
        self.stats.candidates += len(cands)
        crops = [image[y:y + h, x:x + w] for _, _, (x, y, w, h) in cands]
        scores = identity_scores(self.embedder.embed_images(crops), self.reference_embeddings)
        characters = list(scores)
        matrix = np.stack([scores[c] for c in characters], axis=1)
        floor = self.threshold if min_score is None else max(float(self.config.identity_threshold), min_score)
        detections = []
        for i, (_, _, box) in enumerate(cands):
            best = int(np.argmax(matrix[i]))
            score = float(np.clip(matrix[i, best], 0.0, 1.0))
            if score >= floor:
                detections.append(Detection(characters[best], tuple(int(v) for v in box), score))
        kept = nms(detections, self.config.nms_iou, max_keep=self.config.max_per_frame)
        self.stats.assigned += len(kept)
        return kept
