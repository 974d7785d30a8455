"""Step 4, FineTune: hyperparameters, names, request validation against botocore's service model, the
local dry run, the base-model lifecycle check and the job outcome. Event handlers: test_lambda_handlers.py."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import numpy as np
import pytest
from botocore.stub import Stubber
from PIL import Image

from containers.lambda_handlers.local import CALLBACK_HANDLERS
from core.config import ConfigError, parse_config
from core.errors import InputError, TooFewRecordsError
from core.mlops_config import FineTuneConfig, HyperParameters
from steps.bedrock_validation import validate_training_rows
from steps.finetune import (
    TAG_CALLBACK_TOKEN,
    TAG_EXECUTION,
    BedrockModelCustomization,
    FineTuneInputs,
    JobState,
    build_customization_request,
    callback_tags,
    check_base_model_active,
    job_names,
    outcome_of,
    parse_hyperparameters,
)
from steps.request_validation import request_problems, validate_request

ROLE = "arn:aws:iam::123456789012:role/bedrock-customization"
EXECUTION = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/storyboard/execution/a1b2c3d4e5f6"


def _train(folder: Path, n: int = 6, size: tuple[int, int] = (512, 512), fmt: str = "JPEG") -> Path:
    rows = []
    rng = np.random.default_rng(1)
    for i in range(n):
        path = folder / "crops" / f"bunny_{i}.{'png' if fmt == 'PNG' else 'jpg'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, fmt)
        rows.append({"image-ref": str(path), "caption": f"Bunny hops in scene {i}"})
    manifest = folder / "train.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return manifest


# -- hyperparameters and configuration ------------------------------------------------------------------


def test_hyperparameters_are_validated_with_bedrock_bounds():
    assert parse_hyperparameters().to_request() == {"stepCount": "500", "batchSize": "8", "learningRate": "0.00001"}
    hp = parse_hyperparameters("14000", "64", "0.000001")
    assert hp.to_request() == {"stepCount": "14000", "batchSize": "64", "learningRate": "0.000001"}
    assert parse_hyperparameters("", " ", None, HyperParameters(step_count=900)).step_count == 900
    assert parse_hyperparameters("1e3").step_count == 1000
    for args, name in ((("9",), "StepCount"), (("20001",), "StepCount"), ((None, "7"), "BatchSize"),
                       ((None, "193"), "BatchSize"), ((None, None, "0.001"), "LearningRate"),
                       ((None, None, "1e-8"), "LearningRate"), (("12.5",), "StepCount"), ((None, "x"), "BatchSize")):
        with pytest.raises(InputError, match=name):
            parse_hyperparameters(*args)


def test_config_sections_reject_out_of_range_values():
    cfg = parse_config({"finetune": {"hyperparameters": {"step_count": 14000, "batch_size": 64,
                                                         "learning_rate": 1e-6}}})
    assert cfg.finetune.hyperparameters.to_request()["learningRate"] == "0.000001"
    assert cfg.finetune.dry_run is True and cfg.finetune.base_model_id == "amazon.nova-canvas-v1:0"
    for bad in ({"hyperparameters": {"step_count": 5}}, {"hyperparameters": {"batch_size": 256}},
                {"hyperparameters": {"learning_rate": 0.01}}, {"role_arn": "not-an-arn"},
                {"output_s3_uri": "/local/path"}, {"job_name_prefix": "bad--prefix"}, {"unknown": 1}):
        with pytest.raises(ConfigError, match="finetune"):
            parse_config({"finetune": bad})
    with pytest.raises(ConfigError, match="review.mode"):
        parse_config({"review": {"mode": "manual"}})
    with pytest.raises(ConfigError, match="model_units"):
        parse_config({"registry": {"provisioned_throughput": {"model_units": 0}}})


# -- names and request ----------------------------------------------------------------------------------


def test_job_names_are_deterministic_and_valid_for_bedrock():
    a = job_names("storyboard-canvas", f"{EXECUTION}|AbCdE12345")
    assert a == job_names("storyboard-canvas", f"{EXECUTION}|AbCdE12345")
    assert a.job_name != job_names("storyboard-canvas", f"{EXECUTION}|ZzCdE12345").job_name
    inputs = FineTuneInputs("s3://bucket/review/train.jsonl", "amazon.nova-canvas-v1:0", HyperParameters(),
                            "s3://bucket/finetune/", ROLE, False)
    request = build_customization_request(inputs, a, callback_tags("AbCdE12345", EXECUTION))
    assert request_problems("bedrock", "CreateModelCustomizationJob", request) == []
    assert request["customizationType"] == "FINE_TUNING" and "validationDataConfig" not in request
    assert all(isinstance(v, str) for v in request["hyperParameters"].values())
    tags = {t["key"]: t["value"] for t in request["jobTags"]}
    assert tags == {TAG_CALLBACK_TOKEN: "AbCdE12345", TAG_EXECUTION: EXECUTION}


def test_request_validation_reports_what_botocore_skips():
    inputs = FineTuneInputs("/local/train.jsonl", "amazon.nova-canvas-v1:0", HyperParameters(), "s3://b/o/", ROLE,
                            False)
    request = build_customization_request(inputs, job_names("p", "s"))
    problems = request_problems("bedrock", "CreateModelCustomizationJob", request)
    assert any("trainingDataConfig.s3Uri" in p for p in problems)
    request["jobName"] = "x" * 64
    request["customizationType"] = "FINE_TUNE"
    del request["roleArn"]
    with pytest.raises(InputError) as err:
        validate_request("bedrock", "CreateModelCustomizationJob", request)
    text = str(err.value)
    assert "roleArn" in text and "jobName: 64 characters" in text and "FINE_TUNE" in text
    with pytest.raises(InputError, match="unknown AWS service"):
        request_problems("no-such-service", "X", {})
    with pytest.raises(InputError, match="no operation"):
        request_problems("bedrock", "NoSuchOperation", {})
    with pytest.raises(InputError, match="RoleArn"):
        build_customization_request(FineTuneInputs("s3://b/t.jsonl", "m.x", HyperParameters(), "s3://b/o", None,
                                                   False), job_names("p", "s"))
    with pytest.raises(InputError, match="tag"):
        callback_tags("x" * 300, EXECUTION)
    assert callback_tags("AbCdE12345", "arn:" + "x" * 300) == [{"key": TAG_CALLBACK_TOKEN, "value": "AbCdE12345"}]


def test_training_rows_are_checked_against_nova_canvas_limits(tmp_path):
    from steps.image_probes import LocalImageProbe

    manifest = _train(tmp_path, 5)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert validate_training_rows(rows, LocalImageProbe()).ok
    bad = rows + [{"image-ref": rows[0]["image-ref"], "caption": "ok caption"},
                  {"image_ref": "x.jpg", "alt_text": "labelling"},
                  {"image-ref": "s3://bucket/a b.jpg", "caption": "ab"}]
    report = validate_training_rows(bad, LocalImageProbe())
    text = "\n".join(report.errors)
    assert "line 6" in text and "repeats line 1" in text
    assert "labelling manifest format" in text
    assert "3 to 1024" in text and "file names may hold only" in text


# -- local dry run --------------------------------------------------------------------------------------


def test_local_finetune_is_a_validated_dry_run(tmp_path):
    manifest = _train(tmp_path / "data", 6)
    config = parse_config({"finetune": {"role_arn": ROLE}})
    args = {"TrainingManifestUri": str(manifest), "BaseModelId": "amazon.nova-canvas-v1:0", "StepCount": "2000",
            "BatchSize": "16", "LearningRate": "0.00002", "OutputS3Uri": "s3://my-bucket/finetune/", "RoleArn": "",
            "DryRun": "false"}
    run = tmp_path / "run"
    out = CALLBACK_HANDLERS["FineTune"](args, run, config)
    request = json.loads((run / "request.json").read_text())
    assert out == {"JobArn": f"dry-run:{request['jobName']}", "CustomModelArn": "", "DryRun": "true"}
    assert request_problems("bedrock", "CreateModelCustomizationJob", request) == []
    assert request["hyperParameters"] == {"stepCount": "2000", "batchSize": "16", "learningRate": "0.00002"}
    assert request["roleArn"] == ROLE and request["outputDataConfig"]["s3Uri"] == "s3://my-bucket/finetune/"
    assert request["trainingDataConfig"]["s3Uri"] == "s3://my-bucket/finetune/train.jsonl"
    report = json.loads((run / "dry_run_report.json").read_text())
    assert report["training_data"]["images_checked"] == 6 and report["training_data"]["ok"]
    assert "trainingDataConfig.s3Uri" in report["placeholders"] and "roleArn" not in report["placeholders"]
    assert any("DryRun=false" in n for n in report["notes"])
    again = CALLBACK_HANDLERS["FineTune"](args, tmp_path / "run2", config)
    assert again == out  # the job name is derived from the data and settings
    other = CALLBACK_HANDLERS["FineTune"]({**args, "StepCount": "3000"}, tmp_path / "run3", config)
    assert other["JobArn"] != out["JobArn"]


def test_local_finetune_rejects_bad_data_before_writing(tmp_path):
    config = parse_config({})
    small = _train(tmp_path / "small", 6, size=(320, 320))
    with pytest.raises(InputError, match="512 to 4096"):
        CALLBACK_HANDLERS["FineTune"]({"TrainingManifestUri": str(small)}, tmp_path / "r1", config)
    assert not (tmp_path / "r1" / "request.json").exists()
    few = _train(tmp_path / "few", 4)
    with pytest.raises(TooFewRecordsError, match="at least 5"):
        CALLBACK_HANDLERS["FineTune"]({"TrainingManifestUri": str(few)}, tmp_path / "r2", config)
    gif = _train(tmp_path / "gif", 5, fmt="PNG")
    Image.new("RGB", (600, 600)).save(tmp_path / "gif" / "crops" / "bunny_0.png", "GIF")
    with pytest.raises(InputError, match="PNG or JPEG"):
        CALLBACK_HANDLERS["FineTune"]({"TrainingManifestUri": str(gif)}, tmp_path / "r3", config)
    ok = _train(tmp_path / "ok", 5)
    with pytest.raises(InputError, match="BatchSize"):
        CALLBACK_HANDLERS["FineTune"]({"TrainingManifestUri": str(ok), "BatchSize": "4"}, tmp_path / "r4", config)
    with pytest.raises(InputError, match="TrainingManifestUri"):
        CALLBACK_HANDLERS["FineTune"]({}, tmp_path / "r5", config)
    with pytest.raises(InputError, match="DryRun"):
        CALLBACK_HANDLERS["FineTune"]({"TrainingManifestUri": str(ok), "DryRun": "perhaps"}, tmp_path / "r6", config)


# -- AWS backend with Stubber ---------------------------------------------------------------------------


@pytest.fixture
def bedrock(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return boto3.client("bedrock", region_name="us-east-1")


def _foundation_model(status: str) -> dict:
    return {"modelDetails": {"modelArn": "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-canvas-v1:0",
                             "modelId": "amazon.nova-canvas-v1:0", "modelLifecycle": {"status": status}}}


def test_base_model_must_be_active(bedrock):
    service = BedrockModelCustomization(bedrock)
    with Stubber(bedrock) as stub:
        stub.add_response("get_foundation_model", _foundation_model("ACTIVE"),
                          {"modelIdentifier": "amazon.nova-canvas-v1:0"})
        stub.add_response("get_foundation_model", _foundation_model("LEGACY"),
                          {"modelIdentifier": "amazon.nova-canvas-v1:0"})
        assert check_base_model_active(service, "amazon.nova-canvas-v1:0") == "ACTIVE"
        with pytest.raises(InputError, match="LEGACY, not ACTIVE"):
            check_base_model_active(service, "amazon.nova-canvas-v1:0")


def test_start_job_sends_the_exact_request_and_is_idempotent(bedrock):
    names = job_names("storyboard-canvas", f"{EXECUTION}|AbCdE12345")
    inputs = FineTuneInputs("s3://bucket/review/train.jsonl", "amazon.nova-canvas-v1:0",
                            parse_hyperparameters("14000", "64", "0.000001"), "s3://bucket/finetune/", ROLE, False)
    request = build_customization_request(inputs, names, callback_tags("AbCdE12345", EXECUTION))
    job_arn = f"arn:aws:bedrock:us-east-1:123456789012:model-customization-job/amazon.nova-canvas-v1:0/{'a' * 12}"
    service = BedrockModelCustomization(bedrock)
    with Stubber(bedrock) as stub:
        stub.add_response("create_model_customization_job", {"jobArn": job_arn}, request)
        stub.add_client_error("create_model_customization_job", "ResourceInUseException", "job name in use",
                              expected_params=request)
        stub.add_response("get_model_customization_job", {
            "jobArn": job_arn, "jobName": names.job_name, "outputModelName": names.custom_model_name,
            "roleArn": ROLE, "creationTime": "2026-01-01T00:00:00Z", "baseModelArn": "arn:aws:bedrock:x",
            "trainingDataConfig": {"s3Uri": "s3://bucket/review/train.jsonl"},
            "outputDataConfig": {"s3Uri": "s3://bucket/finetune/"}, "status": "InProgress",
            "validationDataConfig": {"validators": []}},
            {"jobIdentifier": names.job_name})
        stub.add_response("list_tags_for_resource", {"tags": [{"key": TAG_CALLBACK_TOKEN, "value": "AbCdE12345"}]},
                          {"resourceARN": job_arn})
        assert service.start_job(request) == job_arn
        assert service.start_job(request) == job_arn  # re-delivered message: the same job
        stub.assert_no_pending_responses()
    assert request["hyperParameters"] == {"stepCount": "14000", "batchSize": "64", "learningRate": "0.000001"}


def test_job_outcomes():
    arn = "arn:aws:bedrock:us-east-1:123456789012:model-customization-job/x/abcdefabcdef"
    done = outcome_of(JobState(arn, "j", "Completed", "arn:aws:bedrock:us-east-1:123456789012:custom-model/x/y"))
    assert done.success and done.outputs == {"JobArn": arn, "CustomModelArn":
                                             "arn:aws:bedrock:us-east-1:123456789012:custom-model/x/y",
                                             "DryRun": "false"}
    failed = outcome_of(JobState(arn, "j", "FAILED", failure_message="bad data"))
    assert not failed.success and "Failed: bad data" in failed.reason
    assert not outcome_of(JobState(arn, "j", "Completed")).success  # no model: never reported as success
    assert not outcome_of(JobState(arn, "j", "Stopped")).success
    assert outcome_of(JobState(arn, "j", "InProgress")) is None


def test_inputs_fall_back_to_configuration():
    cfg = FineTuneConfig(role_arn=ROLE, output_s3_uri="s3://bucket/out", dry_run=False,
                         hyperparameters=HyperParameters(step_count=777))
    inputs = FineTuneInputs.from_arguments({"TrainingManifestUri": "s3://b/t.jsonl", "StepCount": ""}, cfg)
    assert (inputs.role_arn, inputs.output_s3_uri, inputs.dry_run) == (ROLE, "s3://bucket/out", False)
    assert inputs.hyperparameters.step_count == 777
    assert FineTuneInputs.from_arguments({"TrainingManifestUri": "s3://b/t.jsonl", "DryRun": "TRUE"}, cfg).dry_run
    # the definition's spellings
    other = FineTuneInputs.from_arguments({"ReviewedManifestUri": "s3://b/r/train.jsonl", "stepCount": "1200",
                                           "batchSize": "16", "learningRate": "2e-05", "OutputUri": "s3://b/o/",
                                           "DryRun": "False"}, cfg)
    assert other.training_manifest_uri == "s3://b/r/train.jsonl" and other.output_s3_uri == "s3://b/o/"
    assert other.hyperparameters.to_request() == {"stepCount": "1200", "batchSize": "16", "learningRate": "0.00002"}
    assert other.dry_run is False


def test_job_names_from_the_pipeline_job_name():
    seed_a, seed_b = f"{EXECUTION}|AbCdE12345", f"{EXECUTION}|XyZdE12345"
    a = job_names("storyboard-canvas", seed_a, "storyboard-canvas-a1b2c3d4e5f6")
    b = job_names("storyboard-canvas", seed_b, "storyboard-canvas-a1b2c3d4e5f6")
    assert a.job_name.startswith("storyboard-canvas-a1b2c3d4e5f6-") and a.job_name != b.job_name  # a retry
    long = job_names("p", seed_a, "My Film__canvas--" + "x" * 80)
    assert len(long.job_name) <= 63
    inputs = FineTuneInputs("s3://bucket/t.jsonl", "amazon.nova-canvas-v1:0", HyperParameters(), "s3://bucket/o/",
                            ROLE, False)
    for names in (a, long):
        assert request_problems("bedrock", "CreateModelCustomizationJob",
                                build_customization_request(inputs, names)) == []
