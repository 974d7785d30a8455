"""The local runner executes the LoRA pipeline's Training step as SageMaker runs a training job.

The compiled definition of the default configuration (``finetune.backend: sagemaker``) runs with a fake
launcher that plays each container: it checks what a training container is given (``/opt/ml`` layout,
string hyperparameters, the three channels) and writes what ours writes (model files, loss lines,
checkpoints). The real entry point is run on a tiny model in ``test_lora_training.py`` and end to end in
``test_local_runner.py``.
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from storyboard_testutil import fake_gate

from core.config import parse_config
from pipeline import step_names as D
from pipeline.local_processing import PROCESSING_ROOT_ENV
from pipeline.local_runner import LocalRunner
from pipeline.local_training import OPT_ML_ENV, final_metrics

ROLE = "arn:aws:iam::123456789012:role/StoryboardPipeline"
BUCKET = "storyboard-test-bucket"


@pytest.fixture(scope="module")
def config():
    return parse_config({"sagemaker": {"role_arn": ROLE, "bucket": BUCKET}})


@pytest.fixture(scope="module")
def definition(config):
    from pipeline.compile import compile_definition

    return compile_definition(config)


class FakeJobs:
    """Plays the processing and training containers; records what the training container received."""

    def __init__(self, fail_training_once: bool = False, similarity: float = 0.8) -> None:
        self.fail_training_once = fail_training_once
        self.similarity = similarity
        self.training: list[dict[str, Any]] = []
        self.calls: list[str] = []

    def __call__(self, step: str, command: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> int:
        self.calls.append(step)
        assert command[0] == sys.executable and command[1] == "-m"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if step == D.FINETUNE:
            return self._train(command, env, log_path)
        root = Path(env[PROCESSING_ROOT_ENV])
        if step == D.EXTRACT:
            (root / "output" / "extract" / "algo-1").mkdir(parents=True, exist_ok=True)
        elif step == D.CAPTION:
            out = root / "output" / "dataset"
            (out / "crops").mkdir(parents=True, exist_ok=True)
            (out / "crops" / "a.png").write_bytes(b"png")
            (out / "train.jsonl").write_text(json.dumps({"image-ref": "crops/a.png", "caption": "Bunny"}) + "\n")
        elif step == D.EVALUATE:
            model = root / "input" / "model" / "model.tar.gz"
            assert model.is_file(), "Evaluate must receive the training job's model.tar.gz"
            with tarfile.open(model) as tar:
                assert "pytorch_lora_weights.safetensors" in tar.getnames()
            assert (root / "input" / "base_model" / "model_index.json").is_file()
            out = root / "output" / "evaluation"
            out.mkdir(parents=True, exist_ok=True)
            improvement = round(self.similarity - 0.5, 6)
            doc = {"metrics": {"character_similarity": {"finetuned": {"mean": self.similarity},
                                                        "base": {"mean": 0.5}, "improvement": improvement}},
                   "gate": fake_gate(command[3:], similarity=self.similarity, improvement=improvement, base=0.5,
                                     near_copy_rate=0.0),
                   "args": command[3:]}
            (out / D.EVALUATION_FILE).write_text(json.dumps(doc))
        log_path.write_text(f"fake {command[2]}\n")
        return 0

    def _train(self, command: list[str], env: dict[str, str], log_path: Path) -> int:
        assert command[2:] == D.TRAINING_ENTRYPOINT[2:]
        root = Path(env[OPT_ML_ENV])
        hyper = json.loads((root / "input" / "config" / "hyperparameters.json").read_text())
        channels = sorted(p.name for p in (root / "input" / "data").iterdir())
        checkpoints = sorted(p.name for p in (root / "checkpoints").iterdir())
        self.training.append({"hyper": hyper, "channels": channels, "checkpoints": checkpoints,
                              "review": sorted(p.name for p in (root / "input" / "data" / "review").iterdir())})
        steps = int(hyper["max_train_steps"])
        start = int(checkpoints[-1].split("-")[1]) if checkpoints else 0
        with open(log_path, "a", encoding="utf-8") as log:
            for step in range(start + 1, steps + 1):
                log.write(f"step={step} loss={1.0 / step:.4f} lr=0.0001\n")
                if step == 2:
                    (root / "checkpoints" / "checkpoint-2").mkdir(exist_ok=True)
                    if self.fail_training_once:
                        self.fail_training_once = False
                        (root / "output" / "failure").write_text("CUDA out of memory (simulated)")
                        return 1
        (root / "model" / "pytorch_lora_weights.safetensors").write_bytes(b"weights")
        (root / "model" / "README.md").write_text("model card")
        return 0


def _handlers(calls: list[tuple[str, dict]]) -> dict[str, Any]:
    def review(args, step_dir, config):
        calls.append(("HumanReview", args))
        reviewed = step_dir / "reviewed" / "train.jsonl"
        reviewed.parent.mkdir(parents=True, exist_ok=True)
        reviewed.write_text(Path(args["TrainingManifestUri"]).read_text())
        return {"ReviewedManifestUri": str(reviewed), "ApprovedCount": "1", "EditedCount": "0",
                "RejectedCount": "0"}

    def register(event, step_dir, config):
        calls.append(("RegisterModel", event))
        return {"ModelPackageArn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/g/1",
                "Registered": "true", "Reason": ""}

    return {"callback_handlers": {"HumanReview": review}, "lambda_handlers": {"storyboard-register-model": register}}


def _runner(definition, config, tmp_path, jobs, calls, execution_id="lora-1", **params):
    videos, refs, cfg, base = (tmp_path / n for n in ("videos", "refs/bunny", "cfg", "base"))
    for folder in (videos, refs, cfg, base):
        folder.mkdir(parents=True, exist_ok=True)
    (videos / "a.mp4").write_bytes(b"0")
    (refs / "r.png").write_bytes(b"png")
    (cfg / "pipeline.json").write_text("{}")
    (base / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    values = {"InputVideosS3Uri": str(videos), "ReferencesS3Uri": str(tmp_path / "refs"),
              "PipelineConfigS3Uri": str(cfg), "BaseModelS3Uri": str(base), **params}
    prefix = f"s3://{BUCKET}/storyboard/storyboard-pipeline/{execution_id}"
    return LocalRunner.create(definition, tmp_path / "runs", pipeline_name="storyboard-pipeline", parameters=values,
                              execution_id=execution_id, s3_prefixes={prefix: tmp_path / "runs" / execution_id},
                              config=config, launcher=jobs, **_handlers(calls))


def test_training_step_gets_channels_string_hyperparameters_and_yields_the_model_artifact(definition, config,
                                                                                          tmp_path):
    jobs, calls = FakeJobs(), []
    result = _runner(definition, config, tmp_path, jobs, calls, LoraTrainingSteps=5, LoraRank=4).run()
    statuses = {r.StepName: r.StepStatus for r in result.steps}
    assert result.status == "Succeeded", (statuses, result.failure_reason)
    assert statuses[D.REGISTER] == "Succeeded" and statuses[D.FAIL_QUALITY] == "NotExecuted"
    (job,) = jobs.training
    assert job["channels"] == ["base_model", "review", "train"] and job["review"] == ["train.jsonl"]
    assert all(isinstance(v, str) for v in job["hyper"].values())
    assert job["hyper"]["max_train_steps"] == "5" and job["hyper"]["lora_rank"] == "4"
    assert job["hyper"]["learning_rate"] == str(config.finetune.lora.learning_rate)
    run_dir = tmp_path / "runs" / "lora-1"
    props = json.loads((run_dir / D.FINETUNE / "properties.json").read_text())
    artifact = props["ModelArtifacts"]["S3ModelArtifacts"]
    assert artifact.startswith(f"s3://{BUCKET}/storyboard/storyboard-pipeline/lora-1/FineTune/model/")
    assert artifact.endswith("/output/model.tar.gz")
    assert props["FinalMetricDataList"][0]["MetricName"] == "train:loss"
    assert props["FinalMetricDataList"][0]["Value"] == pytest.approx(0.2)
    tarball = Path(result.steps[[r.StepName for r in result.steps].index(D.FINETUNE)].Outputs["model"])
    with tarfile.open(tarball) as tar:
        assert sorted(tar.getnames()) == ["README.md", "pytorch_lora_weights.safetensors"]
    (event,) = [args for name, args in calls if name == "RegisterModel"]
    assert event["ModelDataUrl"] == str(tarball)  # the S3 URI, localized to the packed artifact
    assert event["FineTuneBackend"] == "sagemaker" and event["TrainingJobName"] == props["TrainingJobName"]
    assert event["BaseModelS3Uri"] == str(tmp_path / "base")


def test_a_failed_training_job_reports_its_failure_file_and_resumes_from_its_checkpoint(definition, config,
                                                                                        tmp_path):
    jobs, calls = FakeJobs(fail_training_once=True), []
    runner = _runner(definition, config, tmp_path, jobs, calls, LoraTrainingSteps=4)
    result = runner.run()
    assert result.status == "Failed" and result.failed_step == D.FINETUNE
    assert "CUDA out of memory (simulated)" in result.failure_reason
    resumed = LocalRunner.resume(tmp_path / "runs" / "lora-1", config=config, launcher=jobs, **_handlers(calls))
    result = resumed.run()
    assert result.status == "Succeeded", result.failure_reason
    assert jobs.calls.count(D.EXTRACT) == 1 and jobs.calls.count(D.FINETUNE) == 2
    assert jobs.training[0]["checkpoints"] == [] and jobs.training[1]["checkpoints"] == ["checkpoint-2"]
    log = (tmp_path / "runs" / "lora-1" / D.FINETUNE / "step.log").read_text()
    assert "step=3 " in log and "step=1 " not in log  # the second attempt continued from step 2


def test_quality_gate_failure_after_training_states_the_figures(definition, config, tmp_path):
    jobs, calls = FakeJobs(similarity=0.3), []
    result = _runner(definition, config, tmp_path, jobs, calls, LoraTrainingSteps=2).run()
    assert result.status == "Failed" and result.failed_step == D.FAIL_QUALITY
    assert "0.3" in result.failure_reason and "RegisterModel" not in [n for n, _ in calls]


def test_final_metrics_take_the_last_value_of_each_definition():
    text = "step=1 loss=0.5 lr=1e-4\nnoise loss=abc\nstep=2 loss=2.5e-01 lr=1e-4\n"
    metrics = final_metrics(text, [D.LOSS_METRIC, {"Name": "train:lr", "Regex": r"lr=([0-9.eE+-]+)"},
                                   {"Name": "never", "Regex": r"xyz=(\d+)"}])
    assert [(m["MetricName"], m["Value"]) for m in metrics] == [("train:loss", 0.25), ("train:lr", 1e-4)]
