"""The Bedrock path evaluates its own model: the evaluation Provisioned Throughput is created for this run's
custom model before Evaluate, checked to serve it, answered when InService, deleted after Evaluate and when the
execution ends any other way. Bedrock and SageMaker run on botocore's Stubber (moto implements none of the
throughput calls), which validates every request against the service model."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
import yaml
from botocore.stub import ANY, Stubber

from containers.lambda_handlers import callback_consumer, evaluation_throughput
from containers.lambda_handlers.runtime import Runtime
from core.config import parse_config
from core.errors import InputError
from steps.evaluation_throughput import EvaluationThroughputs, ThroughputState, evaluation_throughput_name

ACCOUNT = "123456789012"
EXECUTION = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:pipeline/storyboard/execution/a1b2c3d4e5f6"
TOKEN = "AbCdE12345"
MODEL = f"arn:aws:bedrock:us-east-1:{ACCOUNT}:custom-model/amazon.nova-canvas-v1:0/m1abcdef"
OTHER_MODEL = f"arn:aws:bedrock:us-east-1:{ACCOUNT}:custom-model/amazon.nova-canvas-v1:0/zz999999"
BASE = "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-canvas-v1:0"
NAME = "storyboard-eval-a1b2c3d4e5f6"
PT_ARN = f"arn:aws:bedrock:us-east-1:{ACCOUNT}:provisioned-model/pt1abcdef"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def clients(aws_env):
    bedrock = boto3.client("bedrock", region_name="us-east-1")
    sm = boto3.client("sagemaker", region_name="us-east-1")
    calls: list[dict] = []
    for client in (bedrock, sm):
        client.meta.events.register("provide-client-params.*.*",
                                    lambda params, model, **kw: calls.append({"op": model.name, **params}))
    return Runtime(parse_config({}), {"bedrock": bedrock, "sagemaker": sm}), bedrock, sm, calls


def _pt(status: str, model: str = MODEL, **extra: str) -> dict:
    return {"provisionedModelArn": PT_ARN, "provisionedModelName": NAME, "modelArn": model, "desiredModelArn": model,
            "foundationModelArn": BASE, "desiredModelUnits": 1, "modelUnits": 1, "status": status,
            "creationTime": "2026-01-01T00:00:00Z", "lastModifiedTime": "2026-01-01T00:00:00Z", **extra}


def _custom_model() -> dict:
    return {"modelArn": MODEL, "modelName": "m1", "creationTime": "2026-01-01T00:00:00Z", "baseModelArn": BASE}


def _message(task: str, **args: str) -> dict:
    return {"Records": [{"messageId": "m0", "attributes": {"ApproximateReceiveCount": "1"}, "body": json.dumps(
        {"token": TOKEN, "pipelineExecutionArn": EXECUTION, "arguments": {"Task": task, **args}})}]}


def test_the_name_is_deterministic_and_valid():
    assert evaluation_throughput_name("storyboard", EXECUTION) == NAME
    long = evaluation_throughput_name("a" * 80, EXECUTION)
    assert len(long) <= 63 and long.endswith("-eval-a1b2c3d4e5f6")
    with pytest.raises(InputError, match="PipelineExecutionArn"):
        evaluation_throughput_name("storyboard", "")


def test_provisioning_creates_a_no_commitment_throughput_then_answers_when_in_service(clients):
    runtime, bedrock, sm, calls = clients
    provision = _message("ProvisionEvaluationModel", CustomModelArn=MODEL, DryRun="false", EvaluationImagesUri="")
    with Stubber(bedrock) as bstub, Stubber(sm) as sstub:
        bstub.add_client_error("get_provisioned_model_throughput", "ResourceNotFoundException", "none", 404,
                               expected_params={"provisionedModelId": NAME})
        bstub.add_response("create_provisioned_model_throughput", {"provisionedModelArn": PT_ARN}, {
            "clientRequestToken": ANY, "modelUnits": 1, "provisionedModelName": NAME, "modelId": MODEL,
            "tags": [{"key": "storyboard:purpose", "value": "evaluation"},
                     {"key": "storyboard:callback-token", "value": TOKEN},
                     {"key": "storyboard:pipeline-execution", "value": EXECUTION},
                     {"key": "storyboard:custom-model", "value": MODEL}]})
        bstub.add_response("get_provisioned_model_throughput", _pt("Creating"), {"provisionedModelId": PT_ARN})
        bstub.add_response("get_custom_model", _custom_model(), {"modelIdentifier": MODEL})
        assert callback_consumer.handle_sqs_event(provision, runtime, 5) == {"batchItemFailures": []}
        sstub.assert_no_pending_responses()  # Creating: no answer yet (the reconciler answers)
        # the same message again once it is InService: nothing created, the step answered with its ARN
        bstub.add_response("get_provisioned_model_throughput", _pt("InService"), {"provisionedModelId": NAME})
        bstub.add_response("get_custom_model", _custom_model(), {"modelIdentifier": MODEL})
        sstub.add_response("send_pipeline_execution_step_success", {"PipelineExecutionArn": EXECUTION},
                           {"CallbackToken": TOKEN, "OutputParameters": [
                               {"Name": "ProvisionedModelArn", "Value": PT_ARN},
                               {"Name": "ProvisionedModelName", "Value": NAME}], "ClientRequestToken": ANY})
        bstub.add_response("tag_resource", {}, {"resourceARN": PT_ARN, "tags": [
            {"key": "storyboard:callback-answered", "value": "InService"}]})
        assert callback_consumer.handle_sqs_event(provision, runtime, 5) == {"batchItemFailures": []}
        bstub.assert_no_pending_responses()
        sstub.assert_no_pending_responses()
    create = next(c for c in calls if c["op"] == "CreateProvisionedModelThroughput")
    assert "commitmentDuration" not in create


def test_a_throughput_serving_another_model_fails_the_step(clients):
    runtime, bedrock, sm, calls = clients
    with Stubber(bedrock) as bstub, Stubber(sm) as sstub:
        bstub.add_response("get_provisioned_model_throughput", _pt("InService", OTHER_MODEL))
        sstub.add_response("send_pipeline_execution_step_failure", {"PipelineExecutionArn": EXECUTION})
        result = callback_consumer.handle_sqs_event(
            _message("ProvisionEvaluationModel", CustomModelArn=MODEL, DryRun="false"), runtime, 5)
        sstub.assert_no_pending_responses()
    assert result == {"batchItemFailures": []}
    reason = calls[-1]["FailureReason"]
    assert reason.startswith("ProvisionEvaluationModel: provisioned throughput") and "not this run's" in reason


def test_a_throughput_on_another_base_model_is_refused(clients):
    _, bedrock, _, _ = clients
    service = EvaluationThroughputs(bedrock)
    state = ThroughputState(PT_ARN, NAME, "InService", MODEL, MODEL, BASE)
    with Stubber(bedrock) as bstub:
        bstub.add_response("get_custom_model", {**_custom_model(), "baseModelArn": BASE.replace("canvas", "reel")})
        with pytest.raises(InputError, match="fine-tuned from"):
            service.check_serves(state, MODEL)


def test_a_failed_throughput_fails_the_step_and_is_deleted(clients):
    runtime, bedrock, sm, calls = clients
    with Stubber(bedrock) as bstub, Stubber(sm) as sstub:
        bstub.add_response("get_provisioned_model_throughput", _pt("Failed", failureMessage="quota exceeded"))
        bstub.add_response("get_custom_model", _custom_model())
        sstub.add_response("send_pipeline_execution_step_failure", {"PipelineExecutionArn": EXECUTION})
        bstub.add_response("tag_resource", {})
        bstub.add_response("delete_provisioned_model_throughput", {}, {"provisionedModelId": PT_ARN})
        callback_consumer.handle_sqs_event(
            _message("ProvisionEvaluationModel", CustomModelArn=MODEL, DryRun="false"), runtime, 5)
        bstub.assert_no_pending_responses()
    assert "quota exceeded" in next(c for c in calls if c["op"] == "SendPipelineExecutionStepFailure")["FailureReason"]


@pytest.mark.parametrize("args", [{"CustomModelArn": "", "DryRun": "true"},
                                  {"CustomModelArn": MODEL, "DryRun": "false", "EvaluationImagesUri": "s3://b/imgs"}])
def test_nothing_is_provisioned_for_a_dry_run_or_supplied_images(clients, args):
    runtime, bedrock, sm, calls = clients
    with Stubber(bedrock) as bstub, Stubber(sm) as sstub:
        sstub.add_response("send_pipeline_execution_step_success", {"PipelineExecutionArn": EXECUTION})
        callback_consumer.handle_sqs_event(_message("ProvisionEvaluationModel", **args), runtime, 5)
        sstub.assert_no_pending_responses()
        bstub.assert_no_pending_responses()
    assert [c["op"] for c in calls] == ["SendPipelineExecutionStepSuccess"]
    assert calls[0]["OutputParameters"][0] == {"Name": "ProvisionedModelArn", "Value": ""}


def test_release_after_evaluate_deletes_and_answers(clients):
    runtime, bedrock, sm, calls = clients
    with Stubber(bedrock) as bstub, Stubber(sm) as sstub:
        bstub.add_response("delete_provisioned_model_throughput", {}, {"provisionedModelId": NAME})
        sstub.add_response("send_pipeline_execution_step_success", {"PipelineExecutionArn": EXECUTION})
        assert callback_consumer.handle_sqs_event(
            _message("ReleaseEvaluationModel", ProvisionedModelArn=PT_ARN), runtime, 5) == {"batchItemFailures": []}
        bstub.assert_no_pending_responses()
    assert calls[-1]["OutputParameters"] == [{"Name": "Released", "Value": "true"}]


def _status_event(status: str) -> dict:
    return {"source": "aws.sagemaker", "detail-type": evaluation_throughput.EXECUTION_DETAIL_TYPE,
            "detail": {"pipelineExecutionArn": EXECUTION, "currentPipelineExecutionStatus": status}}


def test_an_execution_that_fails_or_stops_releases_its_throughput(clients):
    runtime, bedrock, _, _ = clients
    with Stubber(bedrock) as bstub:
        bstub.add_response("delete_provisioned_model_throughput", {}, {"provisionedModelId": NAME})
        bstub.add_client_error("delete_provisioned_model_throughput", "ResourceNotFoundException", "gone", 404)
        bstub.add_client_error("delete_provisioned_model_throughput", "ValidationException",
                               "The provisioned model is in Creating state", 400)
        assert evaluation_throughput.execution_status_handler(_status_event("Failed"), runtime=runtime) == {
            "outcome": f"released {NAME}"}
        assert evaluation_throughput.on_execution_status(_status_event("Stopped"), runtime) == "nothing to release"
        assert evaluation_throughput.on_execution_status(_status_event("Failed"), runtime).startswith(
            "left for the reconciler")
        assert evaluation_throughput.on_execution_status(_status_event("Executing"), runtime) == \
            "ignored: status Executing"
        bstub.assert_no_pending_responses()


def _summary() -> dict:
    return {"provisionedModelSummaries": [{
        "provisionedModelName": NAME, "provisionedModelArn": PT_ARN, "modelArn": MODEL, "desiredModelArn": MODEL,
        "foundationModelArn": BASE, "modelUnits": 1, "desiredModelUnits": 1, "status": "InService",
        "creationTime": "2026-01-01T00:00:00Z", "lastModifiedTime": "2026-01-01T00:00:00Z"}]}


def _tags(**extra: str) -> dict:
    tags = {"storyboard:purpose": "evaluation", "storyboard:callback-token": TOKEN,
            "storyboard:pipeline-execution": EXECUTION, "storyboard:custom-model": MODEL, **extra}
    return {"tags": [{"key": k, "value": v} for k, v in tags.items()]}


def _execution(status: str) -> dict:
    return {"PipelineExecutionArn": EXECUTION, "PipelineExecutionStatus": status}


def test_the_reconciler_answers_ready_throughputs_and_deletes_orphans(clients):
    runtime, bedrock, sm, calls = clients
    with Stubber(bedrock) as bstub, Stubber(sm) as sstub:
        bstub.add_response("list_provisioned_model_throughputs", _summary(),
                           {"nameContains": "storyboard-eval-", "maxResults": 100})
        bstub.add_response("list_tags_for_resource", _tags(), {"resourceARN": PT_ARN})
        sstub.add_response("describe_pipeline_execution", _execution("Executing"), {"PipelineExecutionArn": EXECUTION})
        bstub.add_response("get_provisioned_model_throughput", _pt("InService"))
        bstub.add_response("get_custom_model", _custom_model(), {"modelIdentifier": MODEL})
        sstub.add_response("send_pipeline_execution_step_success", {"PipelineExecutionArn": EXECUTION})
        bstub.add_response("tag_resource", {})
        assert evaluation_throughput.reconcile_evaluation_throughputs(runtime) == [
            {"throughput": PT_ARN, "outcome": "answered success"}]
        # an hour later the execution has failed and no event came: the orphan is deleted
        bstub.add_response("list_provisioned_model_throughputs", _summary())
        bstub.add_response("list_tags_for_resource", _tags(**{"storyboard:callback-answered": "InService"}))
        sstub.add_response("describe_pipeline_execution", _execution("Failed"))
        bstub.add_response("delete_provisioned_model_throughput", {}, {"provisionedModelId": PT_ARN})
        assert evaluation_throughput.reconcile_evaluation_throughputs(runtime) == [
            {"throughput": PT_ARN, "outcome": "deleted (execution Failed)"}]
        bstub.assert_no_pending_responses()
        sstub.assert_no_pending_responses()


def test_the_bedrock_definition_provisions_before_evaluate_and_releases_after(aws_env):
    from pipeline import step_names as D
    from pipeline.compile import compile_definition
    from pipeline.local_definition import flatten_steps

    data = yaml.safe_load((REPO / "pipeline.yaml").read_text())
    data["finetune"]["backend"] = "bedrock"
    steps = flatten_steps(compile_definition(parse_config(data)))
    provision, evaluate, release = steps[D.PROVISION_EVAL], steps[D.EVALUATE], steps[D.RELEASE_EVAL]
    assert D.FINETUNE in provision.depends and D.PROVISION_EVAL in evaluate.depends
    assert D.EVALUATE in release.depends and D.PROVISION_EVAL in release.depends
    args = json.dumps(evaluate.spec["Arguments"])
    assert "--provisioned-model-arn=" in args
    assert "Steps.ProvisionEvaluationModel.OutputParameters['ProvisionedModelArn']" in args
    assert provision.spec["Arguments"]["Task"] == D.PROVISION_EVAL
    assert release.spec["Arguments"]["Task"] == D.RELEASE_EVAL
    assert provision.spec["SqsQueueUrl"] == release.spec["SqsQueueUrl"] == steps[D.FINETUNE].spec["SqsQueueUrl"]
    lora = flatten_steps(compile_definition(parse_config(yaml.safe_load((REPO / "pipeline.yaml").read_text()))))
    assert D.PROVISION_EVAL not in lora and D.RELEASE_EVAL not in lora


def test_evaluate_generates_with_this_runs_throughput(tmp_path, monkeypatch):
    from containers.processing import evaluate

    (tmp_path / "input" / "config").mkdir(parents=True)
    (tmp_path / "input" / "config" / "pipeline.yaml").write_text(
        "finetune: {backend: bedrock}\nevaluation: {custom_model_id: arn:configured}\n", encoding="utf-8")
    (tmp_path / "input" / "references").mkdir()
    (tmp_path / "input" / "dataset").mkdir()
    seen: list[str | None] = []

    class Stop(Exception):
        pass

    def fake_generate(config, references, work, custom_model_arn):
        seen.append(config.evaluation.custom_model_id)
        raise Stop

    monkeypatch.setattr(evaluate, "generate_images", fake_generate)
    base = ["--processing-root", str(tmp_path), "--custom-model-arn", MODEL, "--dry-run", "false"]
    for extra in (["--provisioned-model-arn=" + PT_ARN], ["--provisioned-model-arn="]):
        with pytest.raises(Stop):
            evaluate.main([*base, *extra])
    # this run's throughput when the pipeline provisioned one; else evaluation.custom_model_id
    assert seen == [PT_ARN, "arn:configured"]
