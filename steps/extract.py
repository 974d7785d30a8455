"""ExtractFrames (pipeline step 1): sample frames, find each character, crop, de-duplicate.

``run_extract`` is plain Python: the ``storyboard prepare`` command and the ExtractFrames processing
container both call it. It writes, into ``out_dir``:

- ``frames.jsonl``: every sampled frame, kept or not, with its detections (DESIGN §4);
- ``crops/<crop_id>.jpg``: crops that passed the size and quality filters (duplicates included, marked
  in the metadata), ``crops/dropped/<crop_id>.jpg`` for the others at source resolution, and
  ``crops/frames/<crop_id>.jpg`` for every crop: its frame, 320 px wide, detection and crop region drawn;
- ``crops.jsonl``: one :class:`~steps.records.CropRecord` per crop, kept or dropped, with the reason;
- ``embeddings.npz``: ``crop_ids`` and ``embeddings`` of the crops that passed the filters, so the
  CaptionImages step can de-duplicate across shards without recomputing them;
- ``extract_summary.json``: counts per stage and character, and the thresholds used.

Every input is checked before decoding starts; every file is written atomically.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.config import SamplingConfig, StoryboardConfig
from core.embedders import make_embedder
from core.embeddings import ImageEmbedder
from core.errors import InputError, NoCharacterFoundError
from core.images import encode_image
from core.io import atomic_open, write_bytes, write_json, write_jsonl
from steps.background_windows import BackgroundWindows
from steps.crops import make_crop
from steps.dedup import deduplicate
from steps.detection import CharacterDetector
from steps.progress import ProgressLog, format_duration, stage
from steps.records import BBox, CropRecord, Detection, SampledFrame, frame_log_row
from steps.references import REFERENCES_FOLDER, ReferenceImage, load_references, write_reference_images
from steps.temporal import Scored, smooth_in_shots
from steps.video import VideoInfo, estimate_content_box, probe_video, sample_frames

log = logging.getLogger(__name__)

EXTRACT_OUTPUTS = ("frames.jsonl", "crops.jsonl", "embeddings.npz", "extract_summary.json", "crops", "references",
                   "calibration")
CANDIDATE_FLOOR = 0.5
"""Candidates for temporal rescoring are kept from this fraction of ``detection.min_score`` up."""


@dataclass
class ExtractSummary:
    """What ExtractFrames did: counts per stage and character, thresholds, timings."""

    videos: list[dict[str, Any]] = field(default_factory=list)
    characters: list[str] = field(default_factory=list)
    detector: str = ""
    embedder: str = ""
    frames_sampled: int = 0
    frames_with_character: dict[str, int] = field(default_factory=dict)
    crops_detected: dict[str, int] = field(default_factory=dict)
    crops_dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    crops_kept: dict[str, int] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The ``extract_summary.json`` document."""
        return dict(self.__dict__)


def prepare_out_dir(out_dir: Path, overwrite: bool, owned: Sequence[str]) -> None:
    """Create ``out_dir``; refuse a non-empty one unless ``overwrite``, which removes only ``owned`` outputs.

    Raises:
        InputError: ``out_dir`` exists, is not empty and ``overwrite`` is false, or it is a file.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} is a file; pass a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise InputError(f"--out {out_dir} is not empty; pass --overwrite to replace its outputs "
                             f"or choose an empty folder")
        for name in owned:
            target = out_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


STEP_LABEL = "ExtractFrames"

MINING_MAX_HEIGHT = 540
"""Mining frames are downscaled to at most this height: the detector's descriptors see 64 px windows, and
the memory held by training stays bounded (150 frames of 960x540 RGB: about 230 MiB)."""


def _downscale(frame: SampledFrame, max_height: int) -> SampledFrame:
    h, w = frame.image.shape[:2]
    if h <= max_height:
        return frame
    scale = max_height / h
    image = cv2.resize(frame.image, (max(1, round(w * scale)), max_height), interpolation=cv2.INTER_AREA)
    x, y, cw, ch = frame.content_box
    box = (round(x * scale), round(y * scale), max(1, round(cw * scale)), max(1, round(ch * scale)))
    return replace(frame, image=image, content_box=box)


def _mining_frames(infos: Sequence[VideoInfo], config: StoryboardConfig,
                   content_boxes: dict[str, BBox | None]) -> Iterator[SampledFrame]:
    """Frames spread evenly over all videos, at most ``detection.mining_frames`` in all, downscaled."""
    budget = max(1, config.detection.mining_frames // max(1, len(infos)))
    for info in infos:
        every = max(config.sampling.every_s, (info.duration_s or budget) / budget)
        mining = config.sampling.model_copy(update={"mode": "interval", "every_s": every, "max_frames": budget})
        for frame in sample_frames(info.path, mining, progress=False, info=info,
                                   content_box=content_boxes.get(info.path)):
            yield _downscale(frame, MINING_MAX_HEIGHT)


def build_detector(config: StoryboardConfig, references: dict[str, list[ReferenceImage]],
                   infos: Sequence[VideoInfo], embedder: ImageEmbedder,
                   content_boxes: dict[str, BBox | None] | None = None) -> CharacterDetector:
    """The configured detector, trained where it needs training (the local backend); ``content_boxes``
    are the videos' letterbox estimates where already known."""
    ref_images = {name: [r.image for r in refs] for name, refs in references.items()}
    if config.detection.backend == "rekognition":
        from steps.rekognition import RekognitionDetector

        return RekognitionDetector(ref_images, embedder, config.detection, aws=config.aws)
    from core.feature_backbone import FeatureBackbone, resolve_model_dir
    from steps.local_detector import LocalDetector

    model_dir = resolve_model_dir(config.detection.feature_model)
    detector = LocalDetector(ref_images, config.detection, FeatureBackbone(model_dir) if model_dir else None)
    started = time.monotonic()
    detector.fit(_mining_frames(infos, config, content_boxes or {}))
    log.info("local detector trained in %.1f s", time.monotonic() - started)
    return detector


def _crop_id(character: str, video: str, frame_index: int, n: int) -> str:
    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(video).stem)[:40]
    return f"{character}_{stem}_f{frame_index:06d}_{n}"


def run_extract(videos: Sequence[str | Path], characters_dir: str | Path | None, out_dir: str | Path,
                config: StoryboardConfig, overwrite: bool = False, progress: bool = True,
                detector: CharacterDetector | None = None, embedder: ImageEmbedder | None = None) -> ExtractSummary:
    """Run ExtractFrames on ``videos`` with the characters of ``characters_dir`` / ``config``.

    Args:
        videos: one or more video files.
        characters_dir: folder of ``<character>/`` reference folders (see :mod:`steps.references`).
        out_dir: output folder (created; must be empty unless ``overwrite``).
        config: validated configuration.
        overwrite: replace this step's outputs in a non-empty ``out_dir``.
        progress: show progress bars.
        detector, embedder: injected backends (tests); by default built from ``config``.

    Returns:
        The summary also written to ``extract_summary.json``.

    Raises:
        InputError: a bad video, reference folder or output folder (before decoding starts).
        NoCharacterFoundError: no character was detected in any sampled frame (``frames.jsonl`` and the
            summary are still written, for diagnosis).
    """
    started = time.monotonic()
    if not videos:
        raise InputError("no input video: pass --video PATH (repeat it for several videos)")
    out = Path(out_dir)
    infos = [probe_video(v) for v in videos]
    references = load_references(config, characters_dir, [i.path for i in infos])
    prepare_out_dir(out, overwrite, EXTRACT_OUTPUTS)
    write_reference_images(references, out / REFERENCES_FOLDER)
    embedder = embedder or make_embedder(config.embeddings, config.aws)
    content_boxes = {info.path: estimate_content_box(info.path, config.sampling) for info in infos}
    if detector is None:
        stage(STEP_LABEL, 1, 3, f"training the {config.detection.backend} detector on "
              f"{sum(len(r) for r in references.values())} reference image(s) of {len(references)} character(s) "
              f"({', '.join(references)})")
        detector = build_detector(config, references, infos, embedder, content_boxes)
    names = list(references)
    det_cfg, crop_cfg = config.detection, config.crops
    summary = ExtractSummary(characters=names, detector=detector.name, embedder=embedder.name)
    summary.thresholds = {
        "detection.min_score": det_cfg.min_score,
        "detection.temporal_window": det_cfg.temporal_window,
        "crops.min_side_px": crop_cfg.min_side_px,
        "crops.max_upscale": crop_cfg.max_upscale,
        "crops.min_blur_variance": crop_cfg.min_blur_variance,
        "crops.min_mean_luma": crop_cfg.min_mean_luma,
        "crops.max_mean_luma": crop_cfg.max_mean_luma,
        "dedup.threshold": config.dedup.threshold,
    }
    records: list[CropRecord] = []
    embedded = _CropEmbeddings(embedder)
    frames_with: Counter[str] = Counter()
    ext = "png" if crop_cfg.image_format == "png" else "jpg"
    (out / "crops" / "dropped").mkdir(parents=True, exist_ok=True)
    (out / "crops" / "frames").mkdir(parents=True, exist_ok=True)

    total_s = sum(max(0.0, i.duration_s) for i in infos)
    stage(STEP_LABEL, 2, 3, f"sampling ({config.sampling.mode}) and detecting in {len(infos)} video(s), "
          f"{format_duration(total_s)} of video")
    tracker = ProgressLog(f"{STEP_LABEL} sampling", total_s or None, "s of video")
    offset_s = 0.0
    # windows of frames with clearly no character: the backgrounds Evaluate calibrates the encoder against
    backgrounds = BackgroundWindows(out, max_raw_score=det_cfg.min_score * CANDIDATE_FLOOR)
    with atomic_open(out / "frames.jsonl", "w") as frames_log:
        for info in infos:
            sampled = 0
            evidence: dict[int, dict[str, float]] = {}  # best window score per character, before the gates

            def scored(info: VideoInfo = info, offset_s: float = offset_s,
                       evidence: dict[int, dict[str, float]] = evidence) -> Iterator[Scored]:
                nonlocal sampled
                for frame in sample_frames(info.path, config.sampling, progress=progress, info=info,
                                           content_box=content_boxes[info.path]):
                    sampled += 1
                    tracker.update(round(offset_s + min(frame.timestamp_s, info.duration_s or frame.timestamp_s), 1),
                                   extra=f"{Path(info.path).name}, {summary.frames_sampled + sampled} frames "
                                         f"sampled, {len(records)} crops")
                    cands = detector.detect(frame, min_score=det_cfg.min_score * CANDIDATE_FLOOR)
                    evidence[frame.frame_index] = dict(getattr(detector, "last_evidence", {}))
                    yield Scored(frame, cands, frame.shot, list(getattr(detector, "last_alternatives", [])))

            for frame, kept, raw in smooth_in_shots(scored(), det_cfg.min_score, det_cfg.temporal_window):
                row = frame_log_row(frame, kept)
                row["raw_scores"] = {k: round(v, 4) for k, v in sorted(raw.items())}
                frames_log.write(_dumps(row))
                seen = evidence.pop(frame.frame_index, {})
                if not kept:  # "clearly no character": neither a candidate nor any window scored near one
                    backgrounds.offer(frame, {n: max(raw.get(n, 0.0), seen.get(n, 0.0)) for n in set(raw) | set(seen)})
                for name in {d.character for d in kept}:
                    frames_with[name] += 1
                records.extend(_crop_detections(frame, kept, config, out, ext, embedded))
            summary.videos.append({"path": info.path, "width": info.width, "height": info.height,
                                   "fps": round(info.fps, 3), "duration_s": round(info.duration_s, 3),
                                   "frames_sampled": sampled})
            summary.frames_sampled += sampled
            offset_s += max(0.0, info.duration_s)
    tracker.close(extra=f"{summary.frames_sampled} frames sampled, {len(records)} crops", complete=True)

    summary.frames_with_character = {n: frames_with.get(n, 0) for n in names}
    if not records:
        summary.elapsed_s = round(time.monotonic() - started, 2)
        write_json(out / "extract_summary.json", summary.to_json())
        write_jsonl(out / "crops.jsonl", [])
        raise NoCharacterFoundError(
            f"no character ({', '.join(names)}) was found in {summary.frames_sampled} sampled frames of "
            f"{len(infos)} video(s) with detection.backend={det_cfg.backend}, detection.min_score={det_cfg.min_score} "
            f"(temporally smoothed over {det_cfg.temporal_window} frames). Check that the references show the "
            f"characters of this film, sample more densely (--every), or lower detection.min_score; "
            f"frames.jsonl in {out} lists each frame's best raw score per character.")

    # De-duplicate each character's crops by embedding similarity, keeping the sharpest.
    candidates = [r for r in records if r.dropped_reason is None]
    stage(STEP_LABEL, 3, 3, f"de-duplicating {len(candidates)} crop(s) that passed the quality filters "
          f"(of {len(records)} detected)")
    ids = [r.crop_id for r in candidates]
    emb = embedded.matrix(ids)
    result = deduplicate(emb, [r.sharpness for r in candidates], [r.character for r in candidates],
                         config.dedup.threshold, config.dedup.block_size)
    for i, rec in enumerate(candidates):
        if result.keep[i]:
            rec.dedup_group = rec.crop_id
        else:
            first = candidates[int(result.duplicate_of[i])]
            rec.dropped_reason = "duplicate"
            rec.duplicate_of = first.crop_id
            rec.dedup_group = first.crop_id
            rec.similarity = round(float(result.similarity[i]), 4)
            rec.detail = (f"cosine similarity {rec.similarity:.3f} >= dedup.threshold {config.dedup.threshold:g} "
                          f"with the sharper {first.crop_id}")
    _write_npz(out / "embeddings.npz", ids, emb)
    write_jsonl(out / "crops.jsonl", (r.to_json() for r in records))

    for name in names:
        mine = [r for r in records if r.character == name]
        summary.crops_detected[name] = len(mine)
        summary.crops_dropped[name] = dict(sorted(Counter(r.dropped_reason for r in mine if r.dropped_reason).items()))
        summary.crops_kept[name] = sum(1 for r in mine if r.kept)
    summary.elapsed_s = round(time.monotonic() - started, 2)
    write_json(out / "extract_summary.json", summary.to_json())
    log.info("ExtractFrames: %d frames, crops kept per character: %s (%.1f s)", summary.frames_sampled,
             summary.crops_kept, summary.elapsed_s)
    return summary


class _CropEmbeddings:
    """Embeds crops in batches as they are cut, so only vectors, not pixels, wait for de-duplication."""

    def __init__(self, embedder: ImageEmbedder, batch: int = 32) -> None:
        self.embedder = embedder
        self.batch = batch
        self.pending: list[tuple[str, np.ndarray]] = []
        self.vectors: dict[str, np.ndarray] = {}

    def add(self, crop_id: str, image: np.ndarray) -> None:
        self.pending.append((crop_id, image))
        if len(self.pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            vecs = self.embedder.embed_images([img for _, img in self.pending])
            self.vectors.update({cid: vecs[i] for i, (cid, _) in enumerate(self.pending)})
            self.pending = []

    def matrix(self, ids: Sequence[str]) -> np.ndarray:
        """The ``(len(ids), D)`` embeddings of ``ids``, in that order."""
        self.flush()
        if not ids:
            return np.zeros((0, self.embedder.dimension), np.float32)
        return np.stack([self.vectors[i] for i in ids]).astype(np.float32)


def _crop_detections(frame: SampledFrame, detections: list[Detection], config: StoryboardConfig, out: Path,
                     ext: str, embedded: _CropEmbeddings) -> list[CropRecord]:
    crop_cfg = config.crops
    records = []
    for n, det in enumerate(detections):
        crop_id = _crop_id(det.character, frame.video, frame.frame_index, n)
        result = make_crop(frame.image, det.bbox, frame.content_box, crop_cfg)
        rec = CropRecord(crop_id=crop_id, video=frame.video, frame_index=frame.frame_index,
                         timestamp_s=round(frame.timestamp_s, 4), character=det.character,
                         bbox=[int(v) for v in det.bbox], crop_box=[int(v) for v in result.box],
                         score=round(float(det.score), 4), sharpness=round(result.sharpness, 2),
                         mean_luma=round(result.mean_luma, 2), shot_scale=result.shot_scale,
                         dropped_reason=result.dropped_reason, detail=result.detail)
        rec.frame_path = f"crops/frames/{crop_id}.jpg"
        write_bytes(out / rec.frame_path, _frame_thumbnail(frame.image, det.bbox, result.box))
        if result.image is None:
            x, y, w, h = result.box
            data = encode_image(np.ascontiguousarray(frame.image[y:y + h, x:x + w]), max_bytes=10_000_000,
                                jpeg_quality=85).data
            rec.path = f"crops/dropped/{crop_id}.jpg"
            write_bytes(out / rec.path, data)
        else:
            encoded = encode_image(result.image, max_bytes=50 * 1024 * 1024,
                                   image_format="png" if ext == "png" else "jpeg",
                                   jpeg_quality=crop_cfg.jpeg_quality)
            rec.path = f"crops/{crop_id}.{ext}"
            write_bytes(out / rec.path, encoded.data)
            rec.width, rec.height = int(result.image.shape[1]), int(result.image.shape[0])
            rec.scale = round(result.scale, 4)
            rec.upscaled = result.scale > 1.0 + 1e-9
            embedded.add(crop_id, result.image)
        records.append(rec)
    return records


FRAME_THUMB_WIDTH = 320
"""Width in pixels of the frame thumbnails beside each crop in the report."""


def _frame_thumbnail(image: np.ndarray, bbox: BBox, box: BBox) -> bytes:
    """JPEG bytes of the frame ``image`` (``(H, W, 3)`` uint8 RGB) scaled to :data:`FRAME_THUMB_WIDTH` px
    wide, with the crop region ``box`` drawn in yellow and the detection ``bbox`` in red (both ``(x, y, w, h)``
    in source pixels)."""
    scale = FRAME_THUMB_WIDTH / image.shape[1]
    size = (FRAME_THUMB_WIDTH, max(1, round(image.shape[0] * scale)))
    thumb = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    for (x, y, w, h), colour in ((bbox, (255, 60, 60)), (box, (255, 220, 0))):
        top_left = (round(x * scale), round(y * scale))
        bottom_right = (max(0, round((x + w) * scale) - 1), max(0, round((y + h) * scale) - 1))
        cv2.rectangle(thumb, top_left, bottom_right, colour, 2)
    return encode_image(thumb, max_bytes=1_000_000, image_format="jpeg", jpeg_quality=80).data


def _dumps(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n"


def _write_npz(path: Path, ids: list[str], emb: np.ndarray) -> None:
    with atomic_open(path, "wb") as handle:
        np.savez(handle, crop_ids=np.asarray(ids, dtype=str), embeddings=np.asarray(emb, dtype=np.float32))


def load_embeddings(path: Path) -> tuple[list[str], np.ndarray]:
    """Read ``embeddings.npz``: crop ids and the ``(N, D)`` float32 embeddings."""
    with np.load(path) as data:
        return [str(i) for i in data["crop_ids"]], np.asarray(data["embeddings"], dtype=np.float32)


def sampling_for(config: StoryboardConfig, mode: str | None = None, every_s: float | None = None) -> SamplingConfig:
    """``config.sampling`` with the command line's ``--sampling`` and ``--every`` applied."""
    update: dict[str, Any] = {}
    if mode:
        update["mode"] = mode
    if every_s:
        update["every_s"] = every_s
    return SamplingConfig.model_validate({**config.sampling.model_dump(), **update})
