"""Progress lines: counts, percentage, time left, throttling; the training-log follower; condition sentences."""

from __future__ import annotations

import time
from pathlib import Path

from pipeline.run_progress import StepLogFollower, condition_sentence, describe_operand
from steps.progress import ProgressLog, format_duration, stage


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_are_throttled_and_estimate_the_time_left_from_the_first_update() -> None:
    clock, lines = Clock(), []
    tracker = ProgressLog("ExtractFrames sampling", 100, "s of video", interval_s=10, write=lines.append, clock=clock)
    clock.now += 30  # setup (detector training) before the first unit: not part of the rate
    assert tracker.update(0)
    clock.now += 5
    assert not tracker.update(10)  # within the interval
    clock.now += 5
    assert tracker.update(20, extra="7 frames sampled")
    assert lines[-1] == ("progress: ExtractFrames sampling: 20/100 s of video (20%), 7 frames sampled, 40s elapsed, "
                         "about 40s left")  # 10 s for 20 units since the first update: 40 s for the 80 left
    clock.now += 1
    assert tracker.update(100)  # completion is always reported, once
    assert not tracker.update(100)
    tracker.close()
    assert len(lines) == 3 and lines[-1].startswith("progress: ExtractFrames sampling: 100/100 s of video (100%)")


def test_close_reports_the_whole_when_asked_and_unknown_totals_have_no_estimate() -> None:
    lines: list[str] = []
    tracker = ProgressLog("x", 5.28, "s", interval_s=60, write=lines.append, clock=Clock())
    tracker.update(1)
    tracker.update(5)
    tracker.close(complete=True)
    assert lines[-1].startswith("progress: x: 5.28/5.28 s (100%)")
    open_ended = ProgressLog("y", None, "crops", write=lines.append, clock=Clock())
    open_ended.update(3)
    assert lines[-1] == "progress: y: 3 crops, 0s elapsed"


def test_format_duration_and_stage() -> None:
    assert [format_duration(s) for s in (0, 42.4, 185, 3725, -3)] == ["0s", "42s", "3m05s", "1h02m", "0s"]
    lines: list[str] = []
    assert stage("CaptionImages", 2, 3, "captioning 40 crops", write=lines.append) == \
        "progress: CaptionImages stage 2/3: captioning 40 crops"
    assert lines == ["progress: CaptionImages stage 2/3: captioning 40 crops"]


def test_training_progress_follows_the_metric_lines(tmp_path: Path) -> None:
    log_path = tmp_path / "step.log"
    log_path.write_text("loading the base model\n", encoding="utf-8")
    with StepLogFollower(log_path, poll_s=0.02, interval_s=0) as follower:
        follower.track_training(4, "FineTune training")
        with open(log_path, "a", encoding="utf-8") as handle:
            for step in range(1, 5):
                handle.write(f"step={step} loss=0.{step} lr=0.0001\n")
                handle.flush()
                time.sleep(0.05)
    lines = [line for line in log_path.read_text().splitlines() if "progress:" in line]
    assert any("progress: FineTune training: 1/4 steps (25%)" in line for line in lines)
    assert "progress: FineTune training: 4/4 steps (100%)" in lines[-1]
    assert sum("4/4 steps" in line for line in lines) == 1
    assert any("left" in line for line in lines[1:])


def test_training_progress_writes_nothing_without_metric_lines(tmp_path: Path) -> None:
    log_path = tmp_path / "step.log"
    with StepLogFollower(log_path, poll_s=0.01) as follower:
        follower.track_training(10, "FineTune training")
        log_path.write_text("error: no records\n", encoding="utf-8")
    assert "progress:" not in log_path.read_text()


def test_the_follower_echoes_the_steps_progress_lines_and_tqdm_bars(tmp_path: Path) -> None:
    log_path = tmp_path / "step.log"
    log_path.write_text("12:00:00 progress: step 1/8: ExtractFrames (Processing) started\n", encoding="utf-8")
    echoed: list[str] = []
    with StepLogFollower(log_path, echo=echoed.append, poll_s=0.01, interval_s=60):
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write("12:00:01 INFO storyboard.progress: progress: ExtractFrames stage 1/3: training\n")
            handle.write("12:00:02 INFO steps.extract: local detector trained in 4.3 s\n")
            handle.write("12:00:03 progress: step 1/8: ExtractFrames succeeded in 3.0 s\n")  # the runner's own
            for k in range(4):
                handle.write(f"\rdiffusers prompt set:  {25 * k}%|##  | {k}/4 [00:0{k}<00:04, 1.0request/s]")
                handle.flush()
                time.sleep(0.03)
            handle.write("12:00:05 INFO evaluation.diffusers_generator: loading the base model\n")
    assert echoed[0] == "progress: ExtractFrames stage 1/3: training"
    assert not any("step 1/8" in line or "detector trained" in line for line in echoed)
    bars = [line for line in echoed if "prompt set" in line]
    assert bars[0].startswith("progress: diffusers prompt set:") and "3/4" in bars[-1]  # first, then the latest
    assert len(bars) == 2  # throttled
    assert bars[-1] == "progress: diffusers prompt set:  75%|##  | 3/4 [00:03<00:04, 1.0request/s]"  # no log text


def test_condition_sentence_names_operands_outcome_branch_and_the_gate_summary() -> None:
    status = {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Evaluate.PropertyFiles.EvaluationReport"},
                              "Path": "gate.status"}}
    conditions = [{"Type": "Equals", "LeftValue": status, "RightValue": "passed"}]
    results = [{"Type": "Equals", "Left": "passed", "Right": "passed", "Result": True}]
    summaries = {"gate.summary": "passed: character similarity 0.712 >= 0.650; near-copy rate 0.05 <= 0.2."}

    def read(expr):
        return summaries[expr["Std:JsonGet"]["Path"]]

    text = condition_sentence("Check quality", conditions, results, True, ["RegisterModel"], read)
    assert text == ("Check quality: Evaluate's gate.status is 'passed' (needs 'passed') => passed -> RegisterModel. "
                    "passed: character similarity 0.712 >= 0.650; near-copy rate 0.05 <= 0.2.")
    two = [{"Type": "GreaterThanOrEqualTo", "LeftValue": {"Get": "Parameters.MinCharacterSimilarity"},
            "RightValue": 0.5}, {"Type": "LessThan", "LeftValue": 3, "RightValue": 2}]
    results = [{"Left": 0.7, "Right": 0.5, "Result": True}, {"Left": 3, "Right": 2, "Result": False}]
    text = condition_sentence("Gate", two, results, False, [], read)
    assert text == ("Gate: parameter MinCharacterSimilarity is 0.7 (needs at least 0.5): true; 3 (needs less than 2): "
                    "false => not passed -> no further step")
    assert describe_operand({"Get": "Steps.FineTune.OutputParameters['DryRun']"}) == "FineTune's output DryRun"
