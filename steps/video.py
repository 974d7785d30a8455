"""Frame sampling from video files, streaming, with letterbox removal.

Three modes (DESIGN §8 for measured speeds):

- ``interval``: one frame every ``every_s`` seconds. Every frame is decoded (FFmpeg through PyAV, with
  frame threading) but only the kept frames are converted to RGB, which is what makes it fast.
- ``keyframes``: only keyframes (I-frames) are decoded, with PyAV's ``codec_context.skip_frame =
  "NONKEY"``; with encoders that place keyframes at scene cuts this yields about one frame per shot.
- ``shots``: every frame is decoded; one frame is kept at the start of each shot plus one every
  ``every_s`` seconds inside long shots.

In every mode, cuts are found by comparing a 32x18 thumbnail of each decoded frame (sampled from its
YUV planes) with the previous one (Hellinger distance of hue-saturation-value histograms; a distance
above ``shot_threshold`` is a cut), and each sampled frame carries its shot number.

Frames are yielded one at a time: the video is never held in memory. A truncated or corrupt file
yields what decodes, and a warning gives the time where decoding stopped.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from tqdm import tqdm

from core.config import SamplingConfig
from core.errors import InputError
from steps.records import BBox, SampledFrame

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".mxf"}


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns from the container.

    Attributes:
        path: the video file.
        width, height: frame size in pixels.
        fps: average frame rate (frames per second).
        duration_s: stream duration in seconds (0.0 where the container does not say).
        frame_count: frames according to the container (0 where unknown).
        codec: decoder name, for example ``"h264"``.
    """

    path: str
    width: int
    height: int
    fps: float
    duration_s: float
    frame_count: int
    codec: str


def probe_video(path: str | Path) -> VideoInfo:
    """Open ``path`` and describe its first video stream, decoding one frame to prove it is readable.

    Raises:
        InputError: the file is missing, empty, not a video, has no video stream, or no frame decodes.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"video {p} does not exist; check the --video path")
    if not p.is_file():
        raise InputError(f"video {p} is not a file; pass a video file (for example .mp4) to --video")
    if p.stat().st_size == 0:
        raise InputError(f"video {p} is empty (0 bytes); re-copy or re-export it")
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise InputError(f"video {p} cannot be opened as a video ({err}); is it a video file?") from None
    try:
        if not container.streams.video:
            raise InputError(f"{p} has no video stream (audio only or not a video); pass a video file")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(25, 1)
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as err:
            raise InputError(f"video {p}: no frame decodes ({err}); the file is corrupt or not a video") from None
        if first is None:
            raise InputError(f"video {p}: no frame decodes; the file is corrupt or truncated before its first frame")
        return VideoInfo(
            path=str(p),
            width=int(first.width),
            height=int(first.height),
            fps=float(rate),
            duration_s=duration,
            frame_count=int(stream.frames or 0),
            codec=stream.codec_context.name,
        )
    finally:
        container.close()


def detect_letterbox(images: list[np.ndarray], max_luma: int = 24, min_bar_fraction: float = 0.02) -> BBox:
    """Find the picture inside black bars, from a few frames of one video.

    A row (column) belongs to a bar when its 98th-percentile luma stays at or below ``max_luma`` in every
    frame; bars are only taken from the edges inwards. Bars thinner than ``min_bar_fraction`` of the
    frame are ignored. Frames that are dark all over (fades) are skipped.

    Args:
        images: ``(H, W, 3)`` uint8 RGB frames of the same size.
        max_luma: luma in [0, 255] at or below which a line is black.
        min_bar_fraction: smallest bar kept, as a fraction of the frame height or width.

    Returns:
        ``(x, y, w, h)`` of the content; the whole frame where there is no bar or no usable frame.
    """
    if not images:
        raise ValueError("detect_letterbox needs at least one frame")
    h, w = images[0].shape[:2]
    row_dark = np.ones(h, dtype=bool)
    col_dark = np.ones(w, dtype=bool)
    used = 0
    for img in images:
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        if np.percentile(gray, 99) <= max_luma:
            continue  # a black frame says nothing about bars
        used += 1
        row_dark &= np.percentile(gray, 98, axis=1) <= max_luma
        col_dark &= np.percentile(gray, 98, axis=0) <= max_luma
    if used == 0:
        return (0, 0, w, h)

    def edges(dark: np.ndarray, size: int) -> tuple[int, int]:
        start = 0
        while start < size and dark[start]:
            start += 1
        end = size
        while end > start and dark[end - 1]:
            end -= 1
        min_bar = max(1, int(round(min_bar_fraction * size)))
        if start < min_bar:
            start = 0
        if size - end < min_bar:
            end = size
        return start, end

    y0, y1 = edges(row_dark, h)
    x0, x1 = edges(col_dark, w)
    if y1 - y0 < h // 4 or x1 - x0 < w // 4:
        return (0, 0, w, h)
    return (x0, y0, x1 - x0, y1 - y0)


def _open_stream(path: str, threads: int, keyframes_only: bool) -> tuple[av.container.InputContainer, av.VideoStream]:
    container = av.open(path)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    if threads:
        stream.codec_context.thread_count = threads
    if keyframes_only:
        stream.codec_context.skip_frame = "NONKEY"
    return container, stream


def _frame_time(frame: av.VideoFrame, stream: av.VideoStream, index: int, fps: float) -> float:
    if frame.pts is not None and stream.time_base is not None:
        start = stream.start_time or 0
        return float((frame.pts - start) * stream.time_base)
    return index / fps if fps > 0 else 0.0


def estimate_content_box(path: str, config: SamplingConfig, max_frames: int = 12) -> BBox | None:
    """Letterbox of ``path`` estimated from up to ``max_frames`` keyframes (a fast pre-pass), or ``None``
    when ``config.remove_letterbox`` is off."""
    if not config.remove_letterbox:
        return None
    container, stream = _open_stream(path, config.threads, keyframes_only=True)
    images: list[np.ndarray] = []
    try:
        for frame in container.decode(stream):
            images.append(frame.to_ndarray(format="rgb24"))
            if len(images) >= max_frames:
                break
    except av.error.FFmpegError:
        pass
    finally:
        container.close()
    if not images:
        return None
    return detect_letterbox(images, max_luma=config.letterbox_max_luma)


def _thumbnail(frame: av.VideoFrame, width: int = 32, height: int = 18) -> np.ndarray:
    """A ``(height, width, 3)`` RGB thumbnail, picked from the decoded planes without a full conversion.

    For 8-bit planar YUV frames (yuv420p, yuvj420p, yuv422p, yuv444p) a grid of samples is read straight
    from the Y, U and V planes (about 0.05 ms a frame); other pixel formats go through swscale.
    """
    if frame.format.name in ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"):
        planes = []
        for plane in frame.planes[:3]:
            arr = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, :plane.width]
            rows = (np.arange(height) * plane.height) // height
            cols = (np.arange(width) * plane.width) // width
            planes.append(arr[np.ix_(rows, cols)])
        return cv2.cvtColor(np.ascontiguousarray(np.stack(planes, axis=2)), cv2.COLOR_YUV2RGB)
    return frame.reformat(width=width, height=height, format="rgb24").to_ndarray()


def _thumb_hist(frame: av.VideoFrame) -> np.ndarray:
    hsv = cv2.cvtColor(_thumbnail(frame), cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, [8, 4, 4], [0, 180, 0, 256, 0, 256]).ravel()
    return hist / max(float(hist.sum()), 1.0)


def hellinger(p: np.ndarray, q: np.ndarray) -> float:
    """Hellinger distance of two normalised histograms, in [0, 1] (0: identical)."""
    return float(np.sqrt(max(0.0, 1.0 - float(np.sum(np.sqrt(p * q))))))


def sample_frames(video: str | Path, config: SamplingConfig, progress: bool = True,
                  info: VideoInfo | None = None, content_box: BBox | None = None) -> Iterator[SampledFrame]:
    """Yield the sampled frames of ``video`` in decode order, streaming.

    Args:
        video: path of a video file.
        config: sampling mode, interval in seconds, letterbox removal, frame limit, decoder threads.
        progress: show a tqdm progress bar (in seconds of video) on stderr.
        info: the result of :func:`probe_video`, if already known (else it is probed).
        content_box: the picture inside letterbox bars, if already known (else
            :func:`estimate_content_box` finds it).

    Yields:
        :class:`~steps.records.SampledFrame` with frame index (decode order), timestamp in seconds,
        RGB pixels and the content box inside letterbox bars.

    Raises:
        InputError: the file is not a readable video (raised before decoding starts).
    """
    path = str(video)
    info = info or probe_video(path)
    content = content_box or estimate_content_box(path, config) or (0, 0, info.width, info.height)
    if content != (0, 0, info.width, info.height):
        log.info("%s: letterbox removed, content box %s of %dx%d", Path(path).name, list(content),
                 info.width, info.height)
    keyframes_only = config.mode == "keyframes"
    container, stream = _open_stream(path, config.threads, keyframes_only)
    fps = info.fps or 25.0
    every = config.every_s
    next_t = 0.0
    prev_hist: np.ndarray | None = None
    shot_start = -math.inf
    shot = 0
    kept = 0
    last_t = 0.0
    index = -1
    total = info.duration_s if info.duration_s > 0 else None
    bar = tqdm(total=round(total, 1) if total else None, unit="s", desc=f"sampling {Path(path).name}",
               disable=not progress, leave=False)
    try:
        for frame in container.decode(stream):
            index += 1
            if keyframes_only:
                # frames are skipped, so the decode counter is not the frame index: derive it from time
                t = _frame_time(frame, stream, index, fps)
                frame_index = int(round(t * fps))
            else:
                t = _frame_time(frame, stream, index, fps)
                frame_index = index
            bar.update(max(0.0, round(t - last_t, 3)))
            last_t = t
            hist = _thumb_hist(frame)
            cut = prev_hist is None or hellinger(prev_hist, hist) > config.shot_threshold
            if cut and prev_hist is not None:
                shot += 1
            prev_hist = hist
            keep = False
            if keyframes_only:
                keep = True
            elif config.mode == "interval":
                if t + 1e-6 >= next_t:
                    keep = True
                    next_t = (math.floor((t + 1e-6) / every) + 1) * every
            else:  # shots
                if cut:
                    shot_start = t
                    next_t = t + every
                    keep = True
                elif t + 1e-6 >= next_t and t - shot_start >= every - 1e-6:
                    next_t = t + every
                    keep = True
            if not keep:
                continue
            yield SampledFrame(
                video=path,
                frame_index=frame_index,
                timestamp_s=t,
                image=frame.to_ndarray(format="rgb24"),
                content_box=content,
                keyframe=bool(frame.key_frame),
                shot=shot,
            )
            kept += 1
            if config.max_frames and kept >= config.max_frames:
                break
    except av.error.FFmpegError as err:
        log.warning("%s: decoding stopped at %.2f s (frame %d): %s; keeping the %d frames sampled before it",
                    path, last_t, index, err, kept)
    finally:
        bar.close()
        container.close()
    if total and not config.max_frames and last_t + 2.0 / fps + max(every, 1.0) < total and not keyframes_only:
        log.warning("%s: decoding stopped at %.2f s of %.2f s; the file looks truncated", path, last_t, total)
