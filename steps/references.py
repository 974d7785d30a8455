"""Reference images that define each character: image files, or regions of video frames.

Layout of ``--characters DIR``::

    DIR/<character-name>/*.png|*.jpg|*.jpeg|*.webp    reference images
    DIR/<character-name>/references.yaml              optional: regions of video frames, a list of
        - {video: PATH, timestamp_s: 3.0, bbox: [x, y, w, h]}   (video relative to this file; omitted:
        - {frame_index: 120, bbox: [x, y, w, h]}                 the first input video)

Characters listed in ``pipeline.yaml`` may carry their own ``references`` (same two forms). Every
problem is reported before any video is decoded for sampling.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError

from core.config import CHARACTER_NAME_PATTERN, ReferenceFrame, StoryboardConfig
from core.errors import InputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
MIN_REFERENCE_SIDE_PX = 48
"""A reference smaller than this on either side carries too little detail to define a character."""


@dataclass
class ReferenceImage:
    """One reference: ``image`` is ``(H, W, 3)`` uint8 RGB; ``source`` says where it came from."""

    character: str
    source: str
    image: np.ndarray = field(repr=False)


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InputError(f"reference image {path} cannot be read ({err}); replace it with a PNG or JPEG") from None


def read_video_frame(video: str | Path, timestamp_s: float | None = None, frame_index: int | None = None) -> np.ndarray:
    """Decode one frame of ``video``: the first frame at or after ``timestamp_s`` seconds, or the frame
    with 0-based decode index ``frame_index``. Returns ``(H, W, 3)`` uint8 RGB.

    Raises:
        InputError: the video cannot be opened or the frame lies beyond its end.
    """
    path = Path(video)
    if not path.is_file():
        raise InputError(f"reference video {path} does not exist")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise InputError(f"reference video {path} cannot be opened ({err})") from None
    try:
        stream = container.streams.video[0]
        start = stream.start_time or 0
        for index, frame in enumerate(container.decode(stream)):
            if frame_index is not None:
                if index == frame_index:
                    return frame.to_ndarray(format="rgb24")
            else:
                t = float((frame.pts - start) * stream.time_base) if frame.pts is not None else 0.0
                if t + 1e-6 >= float(timestamp_s or 0.0):
                    return frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as err:
        raise InputError(f"reference video {path}: decoding failed before the reference frame ({err})") from None
    finally:
        container.close()
    where = f"frame {frame_index}" if frame_index is not None else f"{timestamp_s} s"
    raise InputError(f"reference video {path} ends before {where}; fix timestamp_s / frame_index")


def _crop_frame_reference(ref: ReferenceFrame, character: str, default_video: str | None,
                          origin: str) -> ReferenceImage:
    video = ref.video or default_video
    if not video:
        raise InputError(f"{origin}: a frame reference of '{character}' names no video and no --video was given")
    frame = read_video_frame(video, ref.timestamp_s, ref.frame_index)
    x, y, w, h = ref.bbox
    H, W = frame.shape[:2]
    if x + w > W or y + h > H:
        raise InputError(f"{origin}: bbox {list(ref.bbox)} of '{character}' falls outside the {W}x{H} frame of "
                         f"{video}; boxes are [x, y, w, h] in source pixels")
    where = f"t={ref.timestamp_s}s" if ref.timestamp_s is not None else f"frame {ref.frame_index}"
    return ReferenceImage(character, f"{Path(video).name}@{where}:{list(ref.bbox)}",
                          np.ascontiguousarray(frame[y:y + h, x:x + w]))


def _frame_refs_from_yaml(path: Path) -> list[ReferenceFrame]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    except yaml.YAMLError as err:
        raise InputError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, list):
        raise InputError(f"{path} must be a YAML list of {{timestamp_s|frame_index, bbox, video?}} entries")
    refs = []
    for i, item in enumerate(data):
        try:
            ref = ReferenceFrame.model_validate(item)
        except ValidationError as err:
            msgs = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in err.errors())
            raise InputError(f"{path} entry {i}: {msgs}") from None
        if ref.video and not Path(ref.video).is_absolute():
            ref = ref.model_copy(update={"video": str((path.parent / ref.video).resolve())})
        refs.append(ref)
    return refs


def load_references(config: StoryboardConfig, characters_dir: str | Path | None,
                    videos: Sequence[str | Path] = ()) -> dict[str, list[ReferenceImage]]:
    """Load every character's references from ``characters_dir`` and ``config.characters``.

    Args:
        config: validated configuration; its ``characters`` may list references and descriptions.
        characters_dir: folder with one sub-folder per character, or ``None`` (configuration only).
        videos: the input videos; the first is the default video of frame references.

    Returns:
        Character name -> references, in a stable order (names sorted, files sorted).

    Raises:
        InputError: the folder is missing or holds no character folder; a character folder has no
            readable image; an image is unreadable or smaller than 48 px on a side; a frame reference
            is invalid; a folder name is not a valid character name.
    """
    default_video = str(videos[0]) if videos else None
    found: dict[str, list[ReferenceImage]] = {}
    if characters_dir is not None:
        root = Path(characters_dir)
        if not root.is_dir():
            raise InputError(f"characters folder {root} does not exist; pass --characters DIR with one "
                             f"sub-folder of reference images per character")
        subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not subdirs:
            raise InputError(f"characters folder {root} has no sub-folder; put each character's reference "
                             f"images in {root}/<character-name>/")
        for sub in subdirs:
            if not re.match(CHARACTER_NAME_PATTERN, sub.name):
                raise InputError(f"character folder name '{sub.name}' in {root} must be lower-case letters, digits, "
                                 f"'_' or '-'; rename the folder")
            refs: list[ReferenceImage] = []
            for path in sorted(sub.iterdir()):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    refs.append(ReferenceImage(sub.name, str(path), _read_image(path)))
            yaml_path = sub / "references.yaml"
            if yaml_path.is_file():
                for ref in _frame_refs_from_yaml(yaml_path):
                    refs.append(_crop_frame_reference(ref, sub.name, default_video, str(yaml_path)))
            if not refs:
                raise InputError(f"character folder {sub} holds no readable reference image "
                                 f"({', '.join(sorted(IMAGE_SUFFIXES))}) and no references.yaml")
            found[sub.name] = refs
    for character in config.characters:
        refs = found.setdefault(character.name, [])
        for ref in character.references:
            if isinstance(ref, str):
                refs.append(ReferenceImage(character.name, ref, _read_image(Path(ref))))
            else:
                refs.append(_crop_frame_reference(ref, character.name, default_video, "pipeline.yaml"))
        if not refs:
            raise InputError(f"character '{character.name}' in pipeline.yaml has no references and no folder "
                             f"{characters_dir}/{character.name}/")
    if not found:
        raise InputError("no character defined: pass --characters DIR or list characters in pipeline.yaml")
    for name, refs in found.items():
        for ref in refs:
            h, w = ref.image.shape[:2]
            if min(h, w) < MIN_REFERENCE_SIDE_PX:
                raise InputError(f"reference {ref.source} of '{name}' is {w}x{h} px; references need at least "
                                 f"{MIN_REFERENCE_SIDE_PX} px on each side to define a character")
    log.info("references: %s", ", ".join(f"{n} ({len(r)})" for n, r in sorted(found.items())))
    return dict(sorted(found.items()))


REFERENCES_FOLDER = "references"
"""Where ExtractFrames and CaptionImages write the resolved reference images (``<out>/references/<character>/``)."""


def write_reference_images(references: dict[str, list[ReferenceImage]], folder: str | Path) -> int:
    """Write every reference as ``folder/<character>/ref_<k>.png`` (atomically); return how many.

    Frame-region references (``references.yaml``) exist only as regions of a video; written out, they let
    later steps that do not read the videos (Evaluate) score against exactly what defined each character.
    """
    import io

    from core.io import write_bytes

    count = 0
    for character, refs in references.items():
        for k, ref in enumerate(refs):
            buffer = io.BytesIO()
            Image.fromarray(ref.image).save(buffer, format="PNG")
            write_bytes(Path(folder) / character / f"ref_{k:03d}.png", buffer.getvalue())
            count += 1
    return count

