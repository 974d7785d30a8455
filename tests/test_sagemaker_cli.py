"""`storyboard compile / upsert / start / status / list / stop` against a moto server (real HTTP), and the
calls moto does not implement (stop, execution steps) against botocore's Stubber, which validates every
request against the SageMaker service model."""

from __future__ import annotations

import argparse
import json
import urllib.request
from pathlib import Path

import boto3
import pytest
import yaml
from botocore.stub import ANY, Stubber

from core.errors import InputError
from pipeline.commands import context as cmd_context
from pipeline.commands import sagemaker as sm

REPO = Path(__file__).resolve().parents[1]
ROLE = "arn:aws:iam::123456789012:role/StoryboardPipeline"


@pytest.fixture
def aws(moto_url, monkeypatch, tmp_path):
    """Dummy credentials, the moto endpoint, a fresh moto state and a config file with one retry."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).read()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_ENDPOINT_URL": moto_url, "AWS_CONFIG_FILE": str(tmp_path / "none"),
                       "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("STORYBOARD_ROLE_ARN", raising=False)
    monkeypatch.delenv("STORYBOARD_BUCKET", raising=False)
    monkeypatch.chdir(tmp_path)
    return moto_url


def write_config(tmp_path: Path, **sagemaker) -> Path:
    data = yaml.safe_load((REPO / "pipeline.yaml").read_text())
    data["aws"] = {"region": "us-east-1", "max_attempts": 1}
    data["sagemaker"] = {**(data.get("sagemaker") or {}), **sagemaker}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    sm.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_upsert_then_start_creates_pipeline_and_execution(aws, tmp_path, capsys):
    from core.config import load_config
    from core.sagemaker_config import resolve_settings
    from pipeline.compile import compile_definition
    from pipeline.container_config import container_config_bytes
    from pipeline.parameter_values import parameter_defaults
    from pipeline.parameters import CONFIG_URI

    path = write_config(tmp_path, role_arn=ROLE, tags={"Project": "storyboard", "Team": "story"})
    assert cli("upsert", "--config", str(path), "--no-validate-role") == 0
    client = boto3.client("sagemaker")
    described = client.describe_pipeline(PipelineName="storyboard-pipeline")
    config = load_config(path)
    settings = resolve_settings(config)
    assert json.loads(described["PipelineDefinition"]) == compile_definition(config, settings)
    assert described["RoleArn"] == ROLE
    assert "InputVideosS3Uri" in described["PipelineDescription"]
    tags = {t["Key"]: t["Value"] for t in client.list_tags(ResourceArn=described["PipelineArn"])["Tags"]}
    assert tags["Team"] == "story" and tags["Project"] == "storyboard"
    uri = parameter_defaults(config, settings)[CONFIG_URI]
    bucket, key = uri[len("s3://"):].split("/", 1)
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    assert body == container_config_bytes(config)

    # A changed configuration updates the pipeline in place.
    data = yaml.safe_load(path.read_text())
    data["sampling"]["every_s"] = 3.0
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert cli("upsert", "--config", str(path), "--no-validate-role") == 0
    definition = json.loads(client.describe_pipeline(PipelineName="storyboard-pipeline")["PipelineDefinition"])
    assert {p["Name"]: p.get("DefaultValue") for p in definition["Parameters"]}["SamplingIntervalSeconds"] == 3.0
    capsys.readouterr()

    assert cli("start", "--config", str(path), "--param", "LoraTrainingSteps=1200", "--param", "ReviewMode=a2i",
               "--display-name", "first-cut") == 0
    out = capsys.readouterr().out
    arn = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("execution: "))
    execution = client.describe_pipeline_execution(PipelineExecutionArn=arn)
    assert execution["PipelineExecutionDisplayName"] == "first-cut"
    parameters = client.list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)["PipelineParameters"]
    assert {p["Name"]: p["Value"] for p in parameters} == {"LoraTrainingSteps": "1200", "ReviewMode": "a2i"}

    assert cli("list", "--config", str(path)) == 0
    assert arn in capsys.readouterr().out
    assert cli("status", "--config", str(path), arn) == 0
    status = capsys.readouterr().out
    assert f"execution: {arn}" in status and "status:" in status and "name:      first-cut" in status
    assert cli("status", "--config", str(path)) == 0  # default: the latest execution
    assert arn in capsys.readouterr().out


@pytest.mark.parametrize("param, message", [("StepCount=10", "unknown pipeline parameter"),
                                            ("stepCount=1000", "finetune.backend bedrock"),  # Bedrock's
                                            ("LoraRnk=8", r"Did you mean LoraRank\?"),
                                            ("LoraTrainingSteps=0", "outside"),
                                            ("LoraResolution=1020", "multiple of 8"),
                                            ("LoraLearningRate=0.5", "outside"), ("ReviewMode=manual", "one of"),
                                            ("MixedPrecision=fp8", "one of"), ("LoraRank", "Name=Value")])
def test_start_rejects_bad_parameters_before_starting(aws, tmp_path, param, message):
    path = write_config(tmp_path, role_arn=ROLE)
    assert cli("upsert", "--config", str(path), "--no-validate-role") == 0
    with pytest.raises(InputError, match=message):
        cli("start", "--config", str(path), "--param", param)
    executions = boto3.client("sagemaker").list_pipeline_executions(PipelineName="storyboard-pipeline")
    assert executions["PipelineExecutionSummaries"] == []


def test_upsert_needs_a_role_and_takes_it_from_the_environment(aws, tmp_path, monkeypatch):
    path = write_config(tmp_path)
    with pytest.raises(InputError, match="no pipeline role"):
        cli("upsert", "--config", str(path), "--no-validate-role")
    monkeypatch.setenv("STORYBOARD_ROLE_ARN", "arn:aws:iam::123456789012:role/FromEnv")
    assert cli("upsert", "--config", str(path), "--no-validate-role") == 0
    described = boto3.client("sagemaker").describe_pipeline(PipelineName="storyboard-pipeline")
    assert described["RoleArn"] == "arn:aws:iam::123456789012:role/FromEnv"


def test_upsert_refuses_a_configured_bucket_that_does_not_exist(aws, tmp_path):
    path = write_config(tmp_path, role_arn=ROLE, bucket="no-such-storyboard-bucket")
    with pytest.raises(InputError, match="does not exist"):
        cli("upsert", "--config", str(path), "--no-validate-role")


def test_compile_writes_sorted_json_and_notes_placeholders(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("STORYBOARD_ROLE_ARN", raising=False)
    out = tmp_path / "definition.json"
    assert cli("compile", "--config", str(REPO / "pipeline.yaml"), "--out", str(out)) == 0
    assert "placeholder account" in capsys.readouterr().err
    text = out.read_text()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert cli("compile", "--config", str(REPO / "pipeline.yaml"), "--role-arn", ROLE, "--bucket", "my-bucket") == 0
    printed = capsys.readouterr()
    assert "placeholder" not in printed.err and '"s3:/",\n' in printed.out and '"my-bucket"' in printed.out


# ----- calls moto lacks: botocore Stubber ----------------------------------------------------------------

@pytest.fixture
def stubbed(aws_env, monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    client = boto3.client("sagemaker", region_name="us-east-1")
    stubber = Stubber(client)
    monkeypatch.setattr(cmd_context, "sagemaker_client", lambda session, config: client)
    with stubber:
        yield stubber
    stubber.assert_no_pending_responses()


EXECUTION = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/storyboard-pipeline/execution/abc123def456"


def test_stop_defaults_to_the_latest_executing_execution(stubbed, tmp_path, capsys):
    path = write_config(tmp_path, role_arn=ROLE)
    older = EXECUTION.replace("abc123def456", "000000000000")
    stubbed.add_response("list_pipeline_executions", {"PipelineExecutionSummaries": [
        {"PipelineExecutionArn": older, "PipelineExecutionStatus": "Succeeded"},
        {"PipelineExecutionArn": EXECUTION, "PipelineExecutionStatus": "Executing"}]},
        {"PipelineName": "storyboard-pipeline", "SortBy": "CreationTime", "SortOrder": "Descending"})
    token = sm.uuid.uuid5(sm.uuid.NAMESPACE_URL, f"stop:{EXECUTION}").hex
    stubbed.add_response("stop_pipeline_execution", {"PipelineExecutionArn": EXECUTION},
                         {"PipelineExecutionArn": EXECUTION, "ClientRequestToken": token})
    assert cli("stop", "--config", str(path)) == 0
    assert f"stopping {EXECUTION}" in capsys.readouterr().out


def test_start_wait_shows_step_progress_and_the_studio_link(stubbed, tmp_path, capsys):
    path = write_config(tmp_path, role_arn=ROLE, studio_domain_id="d-abc123")
    definition = {"Parameters": [{"Name": "stepCount", "Type": "Integer", "DefaultValue": 500}], "Steps": []}
    stubbed.add_response("describe_pipeline", {"PipelineDefinition": json.dumps(definition)},
                         {"PipelineName": "storyboard-pipeline"})
    stubbed.add_response("start_pipeline_execution", {"PipelineExecutionArn": EXECUTION},
                         {"PipelineName": "storyboard-pipeline", "ClientRequestToken": ANY,
                          "PipelineParameters": [{"Name": "stepCount", "Value": "2000"}]})
    steps_running = [{"StepName": "ExtractFrames", "StepStatus": "Succeeded",
                      "Metadata": {"ProcessingJob": {"Arn": "arn:aws:sagemaker:us-east-1:1:processing-job/x"}}},
                     {"StepName": "CaptionImages", "StepStatus": "Executing"}]
    steps_done = [steps_running[0], {"StepName": "CaptionImages", "StepStatus": "Succeeded"},
                  {"StepName": "CheckModelTrained", "StepStatus": "Succeeded",
                   "Metadata": {"Condition": {"Outcome": "False"}}},
                  {"StepName": "ModelNotTrained", "StepStatus": "Failed", "FailureReason": "dry run"}]
    for status, steps in (("Executing", steps_running), ("Failed", steps_done)):
        described = {"PipelineExecutionStatus": status, **({"FailureReason": "dry run"} if status == "Failed" else {})}
        stubbed.add_response("describe_pipeline_execution", described, {"PipelineExecutionArn": EXECUTION})
        stubbed.add_response("list_pipeline_execution_steps", {"PipelineExecutionSteps": steps},
                             {"PipelineExecutionArn": EXECUTION, "SortOrder": "Ascending"})
    assert cli("start", "--config", str(path), "--param", "stepCount=2000", "--wait", "--poll-seconds", "0") == 1
    out = capsys.readouterr().out
    assert ("https://studio-d-abc123.studio.us-east-1.sagemaker.aws/pipelines/view/storyboard-pipeline/executions/"
            "abc123def456/graph") in out
    lines = [line.strip() for line in out.splitlines()]
    assert lines.count("CaptionImages        Executing") == 1
    assert any(line.startswith("CaptionImages        Succeeded") for line in lines)
    assert sum(line.startswith("ExtractFrames") for line in lines) == 1  # printed once, on change only
    assert "CheckModelTrained    Succeeded   outcome False" in lines
    assert lines[-1] == "execution Failed: dry run"


@pytest.mark.parametrize("opt_out", [True, False])
def test_sdk_telemetry_is_off_unless_the_configuration_turns_it_on(aws, tmp_path, monkeypatch, opt_out):
    telemetry = pytest.importorskip("sagemaker.core.telemetry.telemetry_logging")
    sent: list[tuple] = []
    monkeypatch.setattr(telemetry, "_send_telemetry_request", lambda *args, **kwargs: sent.append(args))
    path = write_config(tmp_path, role_arn=ROLE, telemetry_opt_out=opt_out)
    assert cli("upsert", "--config", str(path), "--no-validate-role") == 0
    assert (sent == []) is opt_out
