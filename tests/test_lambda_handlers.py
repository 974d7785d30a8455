"""AWS Lambda handlers: the callback consumer, the Bedrock job-state handler, the A2I status handler,
the reconciler, the register-model Lambda and the approval handler. S3, Bedrock jobs and the Model
Registry run on moto; SageMaker callbacks, A2I and the Bedrock calls moto lacks run on botocore's
Stubber, which validates every request against the service model."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone

import boto3
import numpy as np
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws
from PIL import Image

from containers.lambda_handlers import approval, callback_consumer, register_model
from containers.lambda_handlers.callbacks import output_parameters, request_token, truncate_reason
from containers.lambda_handlers.finetune_handlers import answer, on_job_state_change, reconcile_jobs
from containers.lambda_handlers.review_handlers import on_human_loop_status, reconcile_reviews
from containers.lambda_handlers.runtime import Runtime, load_lambda_config
from core.config import parse_config
from core.errors import InputError
from steps import approval_state
from steps.a2i_flow import await_flow_definition_active
from steps.a2i_loops import execution_key, loop_name
from steps.finetune import TAG_ANSWERED, TAG_CALLBACK_TOKEN, JobState, job_names, outcome_of
from steps.provisioned_throughput import ThroughputBusyError

ACCOUNT = "123456789012"
EXECUTION = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:pipeline/storyboard/execution/a1b2c3d4e5f6"
TOKEN = "AbCdE12345"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/bedrock-customization"
WORKTEAM = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:workteam/private-crowd/storyboard"
FLOW_ARN = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:flow-definition/storyboard-review"
UI_ARN = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:human-task-ui/storyboard-review-ui"


@pytest.fixture
def aws(aws_env):
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        for bucket in ("data-bucket", "review-bucket"):
            s3.create_bucket(Bucket=bucket)
        yield {"s3": s3}


def _client(service: str):
    return boto3.client(service, region_name="us-east-1")


def _capture(client) -> list[dict]:
    """Every request the client sends, as (operation, params), recorded before the Stubber answers."""
    calls: list[dict] = []
    client.meta.events.register("provide-client-params.*.*",
                                lambda params, model, **kw: calls.append({"op": model.name, **params}))
    return calls


def _jpeg(size: int = 512, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _put_jsonl(s3, bucket: str, key: str, rows: list[dict]) -> str:
    s3.put_object(Bucket=bucket, Key=key, Body="".join(json.dumps(r) + "\n" for r in rows).encode())
    return f"s3://{bucket}/{key}"


def _read_jsonl(s3, uri: str) -> list[dict]:
    bucket, _, key = uri[5:].partition("/")
    return [json.loads(line) for line in s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()]


def _sqs(*bodies: dict | str) -> dict:
    return {"Records": [{"messageId": f"m{i}", "body": b if isinstance(b, str) else json.dumps(b)}
                        for i, b in enumerate(bodies)]}


def _message(task: str, token: str = TOKEN, **args: str) -> dict:
    return {"token": token, "pipelineExecutionArn": EXECUTION, "arguments": {"Task": task, **args}}


# -- callbacks helpers ----------------------------------------------------------------------------------


def test_callback_request_limits():
    assert len(truncate_reason("x" * 1000)) == 256 and truncate_reason("a\n b") == "a b"
    assert 32 <= len(request_token("success", TOKEN, "k")) <= 128
    assert request_token("success", TOKEN, "k") == request_token("success", TOKEN, "k")
    assert request_token("success", TOKEN, "k") != request_token("failure", TOKEN, "k")
    assert output_parameters({"A": 1}) == [{"Name": "A", "Value": "1"}]
    with pytest.raises(InputError):
        output_parameters({"A": "x" * 1025})
    with pytest.raises(InputError):
        output_parameters({str(i): "1" for i in range(51)})


# -- register-model Lambda (the Done-when) ------------------------------------------------------


def test_register_lambda_creates_the_package_once_against_moto(aws):
    runtime = Runtime(parse_config({}), {"sagemaker": _client("sagemaker")})
    event = {"ModelPackageGroupName": "storyboard-characters", "EvaluationUri": "s3://data-bucket/eval/evaluation.json",
             "CustomModelArn": f"arn:aws:bedrock:us-east-1:{ACCOUNT}:custom-model/amazon.nova-canvas-v1:0/abcdefabcdef",
             "JobArn": f"arn:aws:bedrock:us-east-1:{ACCOUNT}:model-customization-job/"
                       "amazon.nova-canvas-v1:0/abcdefabcdef",
             "DryRun": "false", "PipelineExecutionArn": EXECUTION, "CharacterSimilarity": "0.70", "Improvement": "0.09"}
    first = register_model.handle(event, runtime)
    second = register_model.handle(event, runtime)
    assert first["Registered"] == second["Registered"] == "true"
    assert first["ModelPackageArn"] == second["ModelPackageArn"]
    sm = runtime.client("sagemaker")
    assert len(sm.list_model_packages(ModelPackageGroupName="storyboard-characters")["ModelPackageSummaryList"]) == 1
    package = sm.describe_model_package(ModelPackageName=first["ModelPackageArn"])
    assert package["CustomerMetadataProperties"]["metric:CharacterSimilarity"] == "0.70"
    assert package["CustomerMetadataProperties"]["BedrockJobArn"] == event["JobArn"]
    assert package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"] == event["EvaluationUri"]
    assert package["MetadataProperties"]["GeneratedBy"] == EXECUTION
    dry = register_model.handle({**event, "DryRun": "true", "CustomModelArn": ""}, runtime)
    assert dry["Registered"] == "false" and dry["ModelPackageArn"] == ""


# -- FineTune: consumer, job-state events, reconciler ---------------------------------------------------


def _training_data(s3, n: int = 5) -> str:
    rows = []
    for i in range(n):
        s3.put_object(Bucket="data-bucket", Key=f"crops/bunny_{i}.jpg", Body=_jpeg(seed=i))
        rows.append({"image-ref": f"s3://data-bucket/crops/bunny_{i}.jpg", "caption": f"Bunny in scene {i}"})
    return _put_jsonl(s3, "data-bucket", "review/train.jsonl", rows)


def _finetune_args(manifest: str, **extra: str) -> dict:
    return {"TrainingManifestUri": manifest, "BaseModelId": "amazon.nova-canvas-v1:0", "StepCount": "1000",
            "BatchSize": "8", "LearningRate": "0.00001", "OutputS3Uri": "s3://data-bucket/finetune/", "RoleArn": ROLE,
            **extra}


def _active(status: str = "ACTIVE") -> dict:
    return {"modelDetails": {"modelArn": "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-canvas-v1:0",
                             "modelId": "amazon.nova-canvas-v1:0", "modelLifecycle": {"status": status}}}


def test_consumer_starts_the_bedrock_job_after_checks(aws):
    manifest = _training_data(aws["s3"])
    bedrock, sm = _client("bedrock"), _client("sagemaker")
    runtime = Runtime(parse_config({"finetune": {"dry_run": False}}), {"s3": aws["s3"], "bedrock": bedrock,
                                                                      "sagemaker": sm})
    names = job_names("storyboard-canvas", f"{EXECUTION}|{TOKEN}")
    expected = {
        "jobName": names.job_name, "customModelName": names.custom_model_name, "roleArn": ROLE,
        "clientRequestToken": names.client_request_token, "baseModelIdentifier": "amazon.nova-canvas-v1:0",
        "customizationType": "FINE_TUNING",
        "hyperParameters": {"stepCount": "1000", "batchSize": "8", "learningRate": "0.00001"},
        "trainingDataConfig": {"s3Uri": manifest}, "outputDataConfig": {"s3Uri": "s3://data-bucket/finetune/"},
        "jobTags": [{"key": TAG_CALLBACK_TOKEN, "value": TOKEN}, {"key": "storyboard:pipeline-execution",
                                                                 "value": EXECUTION}]}
    with Stubber(bedrock) as bstub, Stubber(sm) as sstub:
        bstub.add_response("get_foundation_model", _active(), {"modelIdentifier": "amazon.nova-canvas-v1:0"})
        bstub.add_response("create_model_customization_job", {"jobArn": "arn:aws:bedrock:us-east-1:123456789012:"
                           "model-customization-job/amazon.nova-canvas-v1:0/abcdefabcdef"}, expected)
        result = callback_consumer.handle_sqs_event(_sqs(_message("FineTune", **_finetune_args(manifest))), runtime)
        assert result == {"batchItemFailures": []}
        bstub.assert_no_pending_responses()
        sstub.assert_no_pending_responses()  # nothing answered yet: the job-state event will


def test_consumer_fails_the_step_for_a_legacy_model_or_bad_data(aws):
    manifest = _training_data(aws["s3"], 4)
    bedrock, sm = _client("bedrock"), _client("sagemaker")
    calls = _capture(sm)
    runtime = Runtime(parse_config({"finetune": {"dry_run": False}}), {"s3": aws["s3"], "bedrock": bedrock,
                                                                      "sagemaker": sm})
    failure = {"CallbackToken": TOKEN, "FailureReason": ANY, "ClientRequestToken": ANY}
    with Stubber(bedrock) as bstub, Stubber(sm) as sstub:
        bstub.add_response("get_foundation_model", _active("LEGACY"), {"modelIdentifier": "amazon.nova-canvas-v1:0"})
        bstub.add_response("get_foundation_model", _active(), {"modelIdentifier": "amazon.nova-canvas-v1:0"})
        sstub.add_response("send_pipeline_execution_step_failure", {"PipelineExecutionArn": EXECUTION}, failure)
        sstub.add_response("send_pipeline_execution_step_failure", {"PipelineExecutionArn": EXECUTION}, failure)
        sstub.add_response("send_pipeline_execution_step_failure", {"PipelineExecutionArn": EXECUTION}, failure)
        result = callback_consumer.handle_sqs_event(_sqs(
            _message("FineTune", **_finetune_args(manifest)),
            _message("FineTune", **_finetune_args(manifest)),
            _message("Evaluate")), runtime)
        assert result == {"batchItemFailures": []}
        sstub.assert_no_pending_responses()
    reasons = [c["FailureReason"] for c in calls]
    assert "LEGACY" in reasons[0] and "at least 5" in reasons[1] and "Task must be one of" in reasons[2]
    assert all(len(r) <= 256 for r in reasons)


def test_consumer_dry_run_writes_the_request_and_answers(aws):
    manifest = _training_data(aws["s3"])
    bedrock, sm = _client("bedrock"), _client("sagemaker")
    calls = _capture(sm)
    runtime = Runtime(parse_config({}), {"s3": aws["s3"], "bedrock": bedrock, "sagemaker": sm})
    names = job_names("storyboard-canvas", f"{EXECUTION}|{TOKEN}")
    with Stubber(bedrock) as bstub, Stubber(sm) as sstub:
        bstub.add_response("get_foundation_model", _active(), {"modelIdentifier": "amazon.nova-canvas-v1:0"})
        sstub.add_response("send_pipeline_execution_step_success", {"PipelineExecutionArn": EXECUTION},
                           {"CallbackToken": TOKEN, "ClientRequestToken": ANY, "OutputParameters": [
                               {"Name": "JobArn", "Value": f"dry-run:{names.job_name}"},
                               {"Name": "CustomModelArn", "Value": ""}, {"Name": "DryRun", "Value": "true"}]})
        args = _finetune_args(manifest, RoleArn="")
        result = callback_consumer.handle_sqs_event(_sqs(_message("FineTune", **args)), runtime)
        assert result["batchItemFailures"] == []
        sstub.assert_no_pending_responses()
    key = f"finetune/dry-run/{names.job_name}/request.json"
    request = json.loads(aws["s3"].get_object(Bucket="data-bucket", Key=key)["Body"].read())
    assert request["trainingDataConfig"]["s3Uri"] == manifest and request["jobName"] == names.job_name
    report = json.loads(aws["s3"].get_object(Bucket="data-bucket", Key=key.replace("request", "dry_run_report"))
                        ["Body"].read())
    assert report["training_data"]["images_checked"] == 5 and "roleArn" in report["placeholders"]
    assert len(calls) == 1


def _start_moto_job(aws, token: str = TOKEN) -> tuple[Runtime, object, str]:
    """Start a job on moto's Bedrock through the consumer; returns (runtime, stubbable sagemaker, job arn)."""
    manifest = _training_data(aws["s3"])
    sm = _client("sagemaker")
    runtime = Runtime(parse_config({"finetune": {"dry_run": False, "require_active_base_model": False}}),
                      {"s3": aws["s3"], "bedrock": _client("bedrock"), "sagemaker": sm})
    assert callback_consumer.handle_sqs_event(_sqs(_message("FineTune", token, **_finetune_args(manifest))),
                                              runtime)["batchItemFailures"] == []
    name = job_names("storyboard-canvas", f"{EXECUTION}|{token}").job_name
    return runtime, sm, runtime.client("bedrock").get_model_customization_job(jobIdentifier=name)["jobArn"]


def _job_event(job_arn: str, status: str, **detail: str) -> dict:
    return {"source": "aws.bedrock", "detail-type": "Model Customization Job State Change",
            "detail": {"jobArn": job_arn, "jobName": job_arn.rsplit("/", 1)[-1], "jobStatus": status, **detail}}


def test_job_state_event_answers_once(aws):
    runtime, sm, job_arn = _start_moto_job(aws)
    model_arn = f"arn:aws:bedrock:us-east-1:{ACCOUNT}:custom-model/amazon.nova-canvas-v1:0/abcdefabcdef"
    calls = _capture(sm)
    with Stubber(sm) as stub:
        stub.add_response("send_pipeline_execution_step_success", {"PipelineExecutionArn": EXECUTION},
                          {"CallbackToken": TOKEN, "ClientRequestToken": ANY, "OutputParameters": [
                              {"Name": "JobArn", "Value": job_arn}, {"Name": "CustomModelArn", "Value": model_arn},
                              {"Name": "DryRun", "Value": "false"}]})
        assert on_job_state_change(_job_event(job_arn, "InProgress"), runtime) == "ignored: status InProgress"
        assert on_job_state_change(_job_event(job_arn, "Completed", outputModelArn=model_arn), runtime) == \
            "answered success"
        assert on_job_state_change(_job_event(job_arn, "Completed", outputModelArn=model_arn), runtime).startswith(
            "duplicate")
        stub.assert_no_pending_responses()
    assert len(calls) == 1 and 32 <= len(calls[0]["ClientRequestToken"]) <= 128
    tags = runtime.client("bedrock").list_tags_for_resource(resourceARN=job_arn)["tags"]
    assert {"key": TAG_ANSWERED, "value": "Completed"} in tags
    # two deliveries racing past the tag check send the very same (idempotent) request
    job = JobState(job_arn, "j", "Completed", model_arn)
    with Stubber(sm) as stub:
        for _ in range(2):
            stub.add_response("send_pipeline_execution_step_success", {"PipelineExecutionArn": EXECUTION},
                              {"CallbackToken": TOKEN, "ClientRequestToken": calls[0]["ClientRequestToken"],
                               "OutputParameters": ANY})
        answer(runtime, TOKEN, job, outcome_of(job))
        answer(runtime, TOKEN, job, outcome_of(job))
        stub.assert_no_pending_responses()


def test_failed_job_reason_is_truncated_and_foreign_jobs_ignored(aws):
    runtime, sm, job_arn = _start_moto_job(aws)
    calls = _capture(sm)
    with Stubber(sm) as stub:
        stub.add_response("send_pipeline_execution_step_failure", {"PipelineExecutionArn": EXECUTION},
                          {"CallbackToken": TOKEN, "FailureReason": ANY, "ClientRequestToken": ANY})
        outcome = on_job_state_change(_job_event(job_arn, "Failed", failureMessage="bad image " * 200), runtime)
        assert outcome == "answered failure"
    assert len(calls[0]["FailureReason"]) <= 256 and "Failed: bad image" in calls[0]["FailureReason"]
    bedrock = runtime.client("bedrock")
    foreign = bedrock.create_model_customization_job(
        jobName="someone-else", customModelName="someone-else", roleArn=ROLE, baseModelIdentifier="amazon.titan",
        trainingDataConfig={"s3Uri": "s3://data-bucket/x.jsonl"}, outputDataConfig={"s3Uri": "s3://data-bucket/o/"})
    assert on_job_state_change(_job_event(foreign["jobArn"], "Completed"), runtime).startswith("ignored")


def test_reconciler_answers_missed_events_and_stops_overdue_jobs(aws):
    from moto.bedrock.models import bedrock_backends

    runtime, sm, done_arn = _start_moto_job(aws, "DoneTok123")
    _, _, late_arn = _start_moto_job(aws, "LateTok123")
    runtime.clients["sagemaker"] = sm
    jobs = bedrock_backends[ACCOUNT]["us-east-1"].model_customization_jobs
    by_arn = {job.job_arn: job for job in jobs.values()}
    by_arn[done_arn].status = "Completed"
    by_arn[late_arn].creation_time = (datetime.now(timezone.utc) - timedelta(hours=30)).strftime("%Y-%m-%d %H:%M:%S")
    calls = _capture(sm)
    with Stubber(sm) as stub:
        stub.add_response("send_pipeline_execution_step_success", {"PipelineExecutionArn": EXECUTION},
                          {"CallbackToken": "DoneTok123", "ClientRequestToken": ANY, "OutputParameters": ANY})
        stub.add_response("send_pipeline_execution_step_failure", {"PipelineExecutionArn": EXECUTION},
                          {"CallbackToken": "LateTok123", "FailureReason": ANY, "ClientRequestToken": ANY})
        report = reconcile_jobs(runtime)
        stub.assert_no_pending_responses()
        assert reconcile_jobs(runtime) == []  # everything answered: nothing more to do
    assert sorted(r["outcome"] for r in report) == ["answered success", "watchdog"]
    assert "watchdog" in calls[1]["FailureReason"]
    assert by_arn[late_arn].status == "Stopped"


def test_stopping_message_stops_the_job_and_answers(aws):
    runtime, sm, job_arn = _start_moto_job(aws)
    calls = _capture(sm)
    with Stubber(sm) as stub:
        stub.add_response("send_pipeline_execution_step_failure", {"PipelineExecutionArn": EXECUTION},
                          {"CallbackToken": TOKEN, "FailureReason": ANY, "ClientRequestToken": ANY})
        stop = {"token": TOKEN, "pipelineExecutionArn": EXECUTION, "Status": "Stopping",
                "arguments": {"Task": "FineTune"}}
        assert callback_consumer.handle_sqs_event(_sqs(stop), runtime) == {"batchItemFailures": []}
        stub.assert_no_pending_responses()
    name = job_arn.rsplit("/", 1)[-1]  # moto resolves names only, where AWS takes both
    assert runtime.client("bedrock").get_model_customization_job(jobIdentifier=name)["status"] == "Stopped"
    assert "stopped job storyboard-canvas-" in calls[0]["FailureReason"]


def test_consumer_leaves_undeliverable_messages_for_a_retry(aws):
    runtime = Runtime(parse_config({}), {"s3": aws["s3"], "sagemaker": _client("sagemaker")})
    result = callback_consumer.handle_sqs_event(_sqs("{not json", {"pipelineExecutionArn": EXECUTION}), runtime)
    assert result == {"batchItemFailures": [{"itemIdentifier": "m0"}, {"itemIdentifier": "m1"}]}


# -- HumanReview: auto on AWS, A2I start / events / reconcile / stop ------------------------------------


def _labelling_manifest(s3, n: int = 6) -> tuple[str, list[dict]]:
    rows = []
    for i in range(n):
        s3.put_object(Bucket="data-bucket", Key=f"crops/bunny_{i:03d}.jpg", Body=_jpeg(seed=i))
        rows.append({"image_ref": f"s3://data-bucket/crops/bunny_{i:03d}.jpg", "alt_text": f"Bunny in scene {i}",
                     "crop_id": f"bunny_{i:03d}", "character": "bunny", "needs_review": i == n - 1})
    return _put_jsonl(s3, "data-bucket", "captions/manifest.jsonl", rows), rows


def test_auto_review_on_aws_answers_at_once(aws):
    manifest, _ = _labelling_manifest(aws["s3"], 7)
    sm = _client("sagemaker")
    calls = _capture(sm)
    runtime = Runtime(parse_config({}), {"s3": aws["s3"], "sagemaker": sm})
    with Stubber(sm) as stub:
        stub.add_response("send_pipeline_execution_step_success", {"PipelineExecutionArn": EXECUTION},
                          {"CallbackToken": TOKEN, "ClientRequestToken": ANY, "OutputParameters": ANY})
        stub.add_response("send_pipeline_execution_step_success", {"PipelineExecutionArn": EXECUTION},
                          {"CallbackToken": "OtherTok12", "ClientRequestToken": ANY, "OutputParameters": ANY})
        message = _message("HumanReview", ManifestUri=manifest, ReviewMode="auto")
        assert callback_consumer.handle_sqs_event(_sqs(message), runtime) == {"batchItemFailures": []}
        with_output = _message("HumanReview", "OtherTok12", ManifestUri=manifest, ReviewMode="auto",
                               OutputUri="s3://data-bucket/runs/exec1/HumanReview/reviewed")
        assert callback_consumer.handle_sqs_event(_sqs(with_output), runtime) == {"batchItemFailures": []}
    outputs = {p["Name"]: p["Value"] for p in calls[0]["OutputParameters"]}
    assert (outputs["ApprovedCount"], outputs["EditedCount"], outputs["RejectedCount"]) == ("6", "0", "1")
    key = execution_key(EXECUTION, TOKEN)
    assert outputs["ReviewedManifestUri"] == f"s3://data-bucket/captions/review/reviews/{key}/reviewed/train.jsonl"
    train = _read_jsonl(aws["s3"], outputs["ReviewedManifestUri"])
    assert len(train) == 6 and all(set(r) == {"image-ref", "caption"} for r in train)
    second = {p["Name"]: p["Value"] for p in calls[1]["OutputParameters"]}
    assert second["ReviewedManifestUri"] == "s3://data-bucket/runs/exec1/HumanReview/reviewed/train.jsonl"
    assert _read_jsonl(aws["s3"], second["ReviewedManifestUri"]) == train


def _a2i_runtime(aws) -> tuple[Runtime, object, object]:
    sm, a2i = _client("sagemaker"), _client("sagemaker-a2i-runtime")
    config = parse_config({"review": {"mode": "a2i", "output_s3_uri": "s3://review-bucket/review",
                                      "workteam_arn": WORKTEAM, "role_arn": f"arn:aws:iam::{ACCOUNT}:role/a2i"}})
    return Runtime(config, {"s3": aws["s3"], "sagemaker": sm, "sagemaker-a2i-runtime": a2i}), sm, a2i


def _flow_definition_created(stub: Stubber) -> None:
    stub.add_client_error("describe_human_task_ui", "ResourceNotFound")
    stub.add_response("create_human_task_ui", {"HumanTaskUiArn": UI_ARN},
                      {"HumanTaskUiName": "storyboard-review-ui", "UiTemplate": {"Content": ANY}})
    stub.add_client_error("describe_flow_definition", "ResourceNotFound")
    stub.add_response("create_flow_definition", {"FlowDefinitionArn": FLOW_ARN}, {
        "FlowDefinitionName": "storyboard-review", "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/a2i",
        "OutputConfig": {"S3OutputPath": "s3://review-bucket/review/a2i"}, "HumanLoopConfig": ANY})
    stub.add_response("describe_flow_definition", _flow_description("Active"),
                      {"FlowDefinitionName": "storyboard-review"})


def _flow_description(status: str, **extra: str) -> dict:
    return {"FlowDefinitionArn": FLOW_ARN, "FlowDefinitionName": "storyboard-review", "FlowDefinitionStatus": status,
            "CreationTime": "2026-01-01T00:00:00Z", "OutputConfig": {"S3OutputPath": "s3://review-bucket/review/a2i"},
            "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/a2i", **extra}


def test_loops_wait_for_the_flow_definition_to_be_active():
    sm = _client("sagemaker")
    waits: list[float] = []
    clock = iter(range(0, 1000, 5))
    with Stubber(sm) as stub:
        for status in ("Initializing", "Initializing", "Active"):
            stub.add_response("describe_flow_definition", _flow_description(status))
        assert await_flow_definition_active(sm, "storyboard-review", 60, 5, waits.append,
                                            lambda: float(next(clock)))["FlowDefinitionArn"] == FLOW_ARN
        stub.assert_no_pending_responses()
    assert waits == [5, 5]
    with Stubber(sm) as stub:
        stub.add_response("describe_flow_definition", _flow_description("Failed", FailureReason="role not found"))
        with pytest.raises(InputError, match="Failed \\(role not found\\)"):
            await_flow_definition_active(sm, "storyboard-review", 60, 5, waits.append)
    clock = iter(range(0, 1000, 5))
    with Stubber(sm) as stub:
        for _ in range(2):
            stub.add_response("describe_flow_definition", _flow_description("Initializing"))
        with pytest.raises(InputError, match="still Initializing after 10 s"):
            await_flow_definition_active(sm, "storyboard-review", 10, 5, lambda s: None, lambda: float(next(clock)))
        stub.assert_no_pending_responses()


def _flow_definition_exists(stub: Stubber) -> None:
    stub.add_response("describe_human_task_ui", {"HumanTaskUiArn": UI_ARN, "HumanTaskUiName": "storyboard-review-ui",
                                                 "CreationTime": "2026-01-01T00:00:00Z", "UiTemplate": {}})
    stub.add_response("describe_flow_definition", {
        "FlowDefinitionArn": FLOW_ARN, "FlowDefinitionName": "storyboard-review", "FlowDefinitionStatus": "Active",
        "CreationTime": "2026-01-01T00:00:00Z", "OutputConfig": {"S3OutputPath": "s3://review-bucket/review/a2i"},
        "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/a2i"})


def _a2i_output(s3, loop: str, answer: dict, worker: str = "w1") -> str:
    key = f"review/a2i/storyboard-review/2026/01/02/03/04/05/{loop}/output.json"
    body = {"humanAnswers": [{"answerContent": answer, "workerId": worker}], "humanLoopName": loop,
            "flowDefinitionArn": FLOW_ARN, "inputContent": {"itemId": "x"}}
    s3.put_object(Bucket="review-bucket", Key=key, Body=json.dumps(body).encode())
    return f"s3://review-bucket/{key}"


def _loop_event(loop: str, status: str = "Completed", output: str | None = None) -> dict:
    detail = {"humanLoopName": loop, "humanLoopStatus": status, "flowDefinitionArn": FLOW_ARN}
    if output:
        detail["humanLoopOutput"] = {"outputS3Uri": output}
    return {"source": "aws.sagemaker", "detail-type": "SageMaker A2I HumanLoop Status Change", "detail": detail}


def _radio(choice: str, caption: str | None = None) -> dict:
    out: dict = {c: {"on": c == choice} for c in ("approve", "edit", "reject")}
    if caption:
        out["caption"] = caption
    return out


def test_a2i_review_from_start_to_answer(aws):
    manifest, rows = _labelling_manifest(aws["s3"], 6)
    runtime, sm, a2i = _a2i_runtime(aws)
    key = execution_key(EXECUTION, TOKEN)
    names = [loop_name("storyboard", key, i) for i in range(6)]
    a2i_calls = _capture(a2i)
    message = _message("HumanReview", ManifestUri=manifest, ReviewMode="a2i")
    with Stubber(sm) as sstub, Stubber(a2i) as astub:
        _flow_definition_created(sstub)
        for name in names:
            astub.add_response("start_human_loop", {"HumanLoopArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:"
                                                                    f"human-loop/{name}"},
                               {"HumanLoopName": name, "FlowDefinitionArn": FLOW_ARN, "HumanLoopInput": ANY})
        # the same message delivered again: resources exist, loops conflict, nothing new starts
        _flow_definition_exists(sstub)
        for name in names:
            astub.add_client_error("start_human_loop", "ConflictException", "HumanLoop already exists",
                                   expected_params={"HumanLoopName": name, "FlowDefinitionArn": FLOW_ARN,
                                                    "HumanLoopInput": ANY})
        assert callback_consumer.handle_sqs_event(_sqs(message, message), runtime) == {"batchItemFailures": []}
        sstub.assert_no_pending_responses()
        astub.assert_no_pending_responses()
    first = json.loads(a2i_calls[0]["HumanLoopInput"]["InputContent"])
    assert (first["callbackToken"], first["itemId"], first["taskObject"]) == (TOKEN, "bunny_000", rows[0]["image_ref"])
    state = json.loads(aws["s3"].get_object(Bucket="review-bucket", Key=f"review/reviews/{key}/state.json")["Body"]
                       .read())
    assert [loop["name"] for loop in state["loops"]] == names

    answers = [_radio("approve"), _radio("approve"), _radio("edit", "Bunny jumps over a log"), _radio("approve"),
               _radio("reject"), _radio("approve")]
    outputs = [_a2i_output(aws["s3"], name, ans) for name, ans in zip(names, answers, strict=True)]
    for i in range(5):
        assert on_human_loop_status(_loop_event(names[i], output=outputs[i]), runtime) == f"waiting {i + 1}/6"
    assert on_human_loop_status(_loop_event(names[0], output=outputs[0]), runtime) == "waiting 5/6"  # duplicate
    assert on_human_loop_status(_loop_event("not-ours"), runtime).startswith("ignored")
    assert on_human_loop_status(_loop_event(names[5], "InProgress"), runtime).startswith("ignored")

    # the last event is missed: the reconciler describes the loop and completes the review
    sm_calls = _capture(sm)
    with Stubber(sm) as sstub, Stubber(a2i) as astub:
        astub.add_response("describe_human_loop", {
            "CreationTime": "2026-01-02T03:04:05Z", "HumanLoopStatus": "Completed", "HumanLoopName": names[5],
            "HumanLoopArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:human-loop/{names[5]}",
            "FlowDefinitionArn": FLOW_ARN,
            "HumanLoopOutput": {"OutputS3Uri": outputs[5]}}, {"HumanLoopName": names[5]})
        sstub.add_response("send_pipeline_execution_step_success", {"PipelineExecutionArn": EXECUTION},
                           {"CallbackToken": TOKEN, "ClientRequestToken": ANY, "OutputParameters": ANY})
        assert reconcile_reviews(runtime) == [{"review": key, "outcome": "completed"}]
        sstub.assert_no_pending_responses()
        # late duplicates after the answer change nothing and call nothing
        assert on_human_loop_status(_loop_event(names[5], output=outputs[5]), runtime) == "already answered"
        assert reconcile_reviews(runtime) == []
    answered = {p["Name"]: p["Value"] for p in sm_calls[0]["OutputParameters"]}
    assert (answered["ApprovedCount"], answered["EditedCount"], answered["RejectedCount"]) == ("4", "1", "1")
    train = _read_jsonl(aws["s3"], answered["ReviewedManifestUri"])
    assert len(train) == 5 and {"image-ref": rows[2]["image_ref"], "caption": "Bunny jumps over a log"} in train
    reviewed = _read_jsonl(aws["s3"], answered["ReviewedManifestUri"].replace("train.jsonl",
                                                                               "reviewed_manifest.jsonl"))
    assert reviewed[4]["review"]["decision"] == "rejected" and reviewed[2]["review"]["human_loop"] == names[2]


def test_a2i_review_stop_and_watchdog(aws):
    manifest, _ = _labelling_manifest(aws["s3"], 5)
    runtime, sm, a2i = _a2i_runtime(aws)
    with Stubber(sm) as sstub, Stubber(a2i) as astub:
        _flow_definition_created(sstub)
        _flow_definition_exists(sstub)
        for _ in range(10):
            astub.add_response("start_human_loop", {"HumanLoopArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:"
                                                                    "human-loop/x"})
        for token in ("StopTok123", "LateTok123"):
            message = _message("HumanReview", token, ManifestUri=manifest, ReviewMode="a2i")
            assert callback_consumer.handle_sqs_event(_sqs(message), runtime) == {"batchItemFailures": []}
    stop_key = execution_key(EXECUTION, "StopTok123")
    calls = _capture(sm)
    with Stubber(sm) as sstub, Stubber(a2i) as astub:
        for i in range(5):
            astub.add_response("stop_human_loop", {}, {"HumanLoopName": loop_name("storyboard", stop_key, i)})
        sstub.add_response("send_pipeline_execution_step_failure", {"PipelineExecutionArn": EXECUTION},
                           {"CallbackToken": "StopTok123", "FailureReason": ANY, "ClientRequestToken": ANY})
        stop = {"token": "StopTok123", "pipelineExecutionArn": EXECUTION, "status": "Stopping"}  # no arguments
        assert callback_consumer.handle_sqs_event(_sqs(stop), runtime) == {"batchItemFailures": []}
        astub.assert_no_pending_responses()
    assert "5 human loops" in calls[0]["FailureReason"]
    late_key = execution_key(EXECUTION, "LateTok123")
    later = datetime.now(timezone.utc) + timedelta(hours=runtime.config.review.watchdog_hours + 1)
    with Stubber(sm) as sstub, Stubber(a2i) as astub:
        for i in range(5):
            astub.add_response("describe_human_loop", {
                "CreationTime": "2026-01-02T03:04:05Z", "HumanLoopStatus": "InProgress",
                "HumanLoopName": loop_name("storyboard", late_key, i), "FlowDefinitionArn": FLOW_ARN,
                "HumanLoopArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:human-loop/x"})
        for i in range(5):
            astub.add_response("stop_human_loop", {}, {"HumanLoopName": loop_name("storyboard", late_key, i)})
        sstub.add_response("send_pipeline_execution_step_failure", {"PipelineExecutionArn": EXECUTION},
                           {"CallbackToken": "LateTok123", "FailureReason": ANY, "ClientRequestToken": ANY})
        assert reconcile_reviews(runtime, now=later) == [{"review": late_key, "outcome": "watchdog"}]
        astub.assert_no_pending_responses()
    assert "watchdog" in calls[-1]["FailureReason"]


def test_a2i_mode_needs_its_settings(aws):
    manifest, _ = _labelling_manifest(aws["s3"], 5)
    sm = _client("sagemaker")
    calls = _capture(sm)
    runtime = Runtime(parse_config({"review": {"output_s3_uri": "s3://review-bucket/review"}}),
                      {"s3": aws["s3"], "sagemaker": sm})
    with Stubber(sm) as stub:
        stub.add_client_error("describe_human_task_ui", "ResourceNotFound")
        stub.add_response("create_human_task_ui", {"HumanTaskUiArn": UI_ARN})
        stub.add_response("send_pipeline_execution_step_failure", {"PipelineExecutionArn": EXECUTION})
        message = _message("HumanReview", ManifestUri=manifest, ReviewMode="a2i")
        assert callback_consumer.handle_sqs_event(_sqs(message), runtime) == {"batchItemFailures": []}
    assert "workteam_arn" in calls[-1]["FailureReason"]


# -- approval handler and configuration -----------------------------------------------------------------


def test_approval_handler_creates_a_throughput_for_an_approved_package(aws):
    sm, bedrock = _client("sagemaker"), _client("bedrock")
    runtime = Runtime(parse_config({}), {"sagemaker": sm, "bedrock": bedrock})
    model = f"arn:aws:bedrock:us-east-1:{ACCOUNT}:custom-model/amazon.nova-canvas-v1:0/abcdefabcdef"
    event = {"ModelPackageGroupName": "storyboard-characters", "EvaluationUri": "s3://data-bucket/e.json",
             "CustomModelArn": model, "JobArn": "arn:job", "DryRun": "false", "PipelineExecutionArn": EXECUTION}
    arn = register_model.handle(event, runtime)["ModelPackageArn"]
    metadata = sm.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"]
    # (moto drops the metadata on an update that omits it; SageMaker keeps it)
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved", CustomerMetadataProperties=metadata)
    pt_arn = f"arn:aws:bedrock:us-east-1:{ACCOUNT}:provisioned-model/abcdefabcdef"
    with Stubber(bedrock) as stub:
        stub.add_response("list_provisioned_model_throughputs", {"provisionedModelSummaries": []})
        stub.add_response("create_provisioned_model_throughput", {"provisionedModelArn": pt_arn},
                          {"modelUnits": 1, "provisionedModelName": "storyboard-characters", "modelId": model,
                           "clientRequestToken": ANY})
        stub.add_response("list_provisioned_model_throughputs", {"provisionedModelSummaries": []},
                          {"nameContains": "storyboard-characters-v", "maxResults": 100})
        state_change = {"source": "aws.sagemaker", "detail-type": "SageMaker Model Package State Change",
                        "detail": {"ModelPackageArn": arn, "ModelPackageGroupName": "storyboard-characters",
                                   "ModelApprovalStatus": "Approved"}}
        result = approval.handle(state_change, runtime)
        stub.assert_no_pending_responses()
    assert result["action"] == "created" and result["throughputArn"] == pt_arn
    metadata = sm.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"]
    assert metadata["ProvisionedModelArn"] == pt_arn and metadata["CustomModelArn"] == model
    other = {"detail": {"ModelPackageArn": arn, "ModelPackageGroupName": "another-group"}}
    assert approval.handle(other, runtime)["action"] == "none"


def test_lambda_configuration_comes_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "pipeline.yaml"
    path.write_text("project: myfilm\nreview:\n  mode: a2i\n", encoding="utf-8")
    assert load_lambda_config({"STORYBOARD_CONFIG": str(path)}).project == "myfilm"
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "pipeline.yaml").write_text("project: fromtask\n", encoding="utf-8")
    assert load_lambda_config({"LAMBDA_TASK_ROOT": str(tmp_path / "task")}).project == "fromtask"
    assert load_lambda_config({"LAMBDA_TASK_ROOT": str(tmp_path / "none")}).project == "storyboard"


def test_definition_argument_names_and_a_bare_stop_message(aws):
    manifest = _training_data(aws["s3"])
    sm = _client("sagemaker")
    runtime = Runtime(parse_config({"finetune": {"require_active_base_model": False}}),
                      {"s3": aws["s3"], "bedrock": _client("bedrock"), "sagemaker": sm})
    args = {"ReviewedManifestUri": manifest, "BaseModelId": "amazon.nova-canvas-v1:0", "stepCount": "1500",
            "batchSize": "16", "learningRate": "0.000005", "DryRun": "false",
            "JobName": "storyboard-canvas-a1b2c3d4e5f6", "OutputUri": "s3://data-bucket/runs/x/FineTune/customization",
            "PipelineExecutionArn": EXECUTION}
    runtime.config.finetune.role_arn = ROLE
    assert callback_consumer.handle_sqs_event(_sqs(_message("FineTune", **args)), runtime) == {"batchItemFailures": []}
    bedrock = runtime.client("bedrock")
    [summary] = bedrock.list_model_customization_jobs()["modelCustomizationJobSummaries"]
    assert summary["jobName"].startswith("storyboard-canvas-a1b2c3d4e5f6-")
    job = bedrock.get_model_customization_job(jobIdentifier=summary["jobName"])
    assert job["hyperParameters"] == {"stepCount": "1500", "batchSize": "16", "learningRate": "0.000005"}
    assert job["outputDataConfig"]["s3Uri"] == "s3://data-bucket/runs/x/FineTune/customization"
    calls = _capture(sm)
    with Stubber(sm) as stub:
        stub.add_response("send_pipeline_execution_step_failure", {"PipelineExecutionArn": EXECUTION},
                          {"CallbackToken": TOKEN, "FailureReason": ANY, "ClientRequestToken": ANY})
        bare = {"token": TOKEN, "pipelineExecutionArn": EXECUTION, "status": "Stopping"}
        assert callback_consumer.handle_sqs_event(_sqs(bare), runtime) == {"batchItemFailures": []}
    assert bedrock.get_model_customization_job(jobIdentifier=summary["jobName"])["status"] == "Stopped"
    assert summary["jobName"] in calls[0]["FailureReason"]


# -- LoRA packages: registration and endpoint deployment ------------------------------------------------

LORA_IMAGE = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/storyboard-inference:latest"
SM_ROLE = f"arn:aws:iam::{ACCOUNT}:role/storyboard-sagemaker"


def _lora_event(execution: str = EXECUTION, **overrides: str) -> dict:
    event = {"FineTuneBackend": "sagemaker", "ModelPackageGroupName": "storyboard-characters",
             "ModelDataUrl": f"s3://data-bucket/runs/{execution[-6:]}/FineTune/job/output/model.tar.gz",
             "TrainingJobName": "storyboard-lora-a1b2c3", "BaseModelS3Uri": "s3://data-bucket/models/sdxl/",
             "BaseModelId": "stabilityai/stable-diffusion-xl-base-1.0", "InferenceImageUri": LORA_IMAGE,
             "InferenceInstanceTypes": "ml.g5.2xlarge", "ModelApprovalStatus": "PendingManualApproval",
             "EvaluationReportUri": "s3://data-bucket/eval/evaluation.json",
             "ReviewedManifestUri": "s3://data-bucket/review/train.jsonl", "PipelineExecutionArn": execution,
             "ClientToken": execution[-12:], "DryRun": "false", "CharacterSimilarity": "0.70",
             "ImprovementOverBase": "0.09"}
    event.update(overrides)
    return event


def _state_change(arn: str) -> dict:
    return {"source": "aws.sagemaker", "detail-type": "SageMaker Model Package State Change",
            "detail": {"ModelPackageArn": arn, "ModelPackageGroupName": "storyboard-characters"}}


def _set_status(sm, arn: str, status: str) -> None:
    metadata = sm.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"]
    # (moto drops the metadata on an update that omits it; SageMaker keeps it)
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status, CustomerMetadataProperties=metadata)


def test_register_lambda_creates_a_deployable_lora_package(aws):
    sm = _client("sagemaker")
    calls = _capture(sm)
    runtime = Runtime(parse_config({}), {"sagemaker": sm})
    arn = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model-package/storyboard-characters/1"
    with Stubber(sm) as stub:  # the request as SageMaker receives it, validated against the service model
        stub.add_response("describe_model_package_group", {
            "ModelPackageGroupName": "storyboard-characters", "ModelPackageGroupArn": arn.rsplit("/", 1)[0],
            "CreationTime": "2026-01-01T00:00:00Z", "CreatedBy": {}, "ModelPackageGroupStatus": "Completed"})
        stub.add_response("list_model_packages", {"ModelPackageSummaryList": []})
        stub.add_response("create_model_package", {"ModelPackageArn": arn})
        assert register_model.handle(_lora_event(), runtime)["ModelPackageArn"] == arn
        stub.assert_no_pending_responses()
    [container] = calls[-1]["InferenceSpecification"]["Containers"]
    assert container["ModelDataUrl"].endswith("/output/model.tar.gz") and container["Image"] == LORA_IMAGE
    assert container["AdditionalModelDataSources"][0]["S3DataSource"]["S3Uri"] == "s3://data-bucket/models/sdxl/"
    assert calls[-1]["CustomerMetadataProperties"]["TrainingJobName"] == "storyboard-lora-a1b2c3"

    runtime = Runtime(parse_config({}), {"sagemaker": _client("sagemaker")})  # and on moto, once per execution
    first, second = register_model.handle(_lora_event(), runtime), register_model.handle(_lora_event(), runtime)
    assert first["Registered"] == "true" and first["ModelPackageArn"] == second["ModelPackageArn"]
    package = runtime.client("sagemaker").describe_model_package(ModelPackageName=first["ModelPackageArn"])
    assert package["InferenceSpecification"]["SupportedRealtimeInferenceInstanceTypes"] == ["ml.g5.2xlarge"]
    assert package["CustomerMetadataProperties"]["BaseModelS3Uri"] == "s3://data-bucket/models/sdxl/"
    dry = register_model.handle(_lora_event(DryRun="true"), runtime)
    missing = register_model.handle(_lora_event(EXECUTION + "x", ModelDataUrl=""), runtime)
    assert dry["Registered"] == missing["Registered"] == "false" and "ModelDataUrl" in missing["Reason"]


def test_approval_handler_deploys_then_removes_a_lora_package(aws):
    sm = _client("sagemaker")
    # moto's instance-type list predates g5: the moto tests use g4dn (botocore's model accepts both)
    runtime = Runtime(parse_config({"sagemaker": {"role_arn": SM_ROLE},
                                    "registry": {"endpoint": {"instance_type": "ml.g4dn.2xlarge"}}}), {"sagemaker": sm})
    arn = register_model.handle(_lora_event(InferenceInstanceTypes="ml.g4dn.2xlarge"), runtime)["ModelPackageArn"]
    assert approval.handle(_state_change(arn), runtime)["action"] == "none"  # still PendingManualApproval
    _set_status(sm, arn, "Approved")
    result = approval.handle(_state_change(arn), runtime)
    assert result["action"] == "created" and result["endpointName"] == "storyboard-characters-endpoint"
    endpoint = sm.describe_endpoint(EndpointName="storyboard-characters-endpoint")
    assert endpoint["EndpointConfigName"] == "storyboard-characters-v1"
    config = sm.describe_endpoint_config(EndpointConfigName="storyboard-characters-v1")
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.g4dn.2xlarge"
    model = sm.describe_model(ModelName="storyboard-characters-v1")
    assert model["ExecutionRoleArn"] == SM_ROLE and model["PrimaryContainer"]["Image"] == LORA_IMAGE
    metadata = sm.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"]
    assert metadata["EndpointName"] == "storyboard-characters-endpoint" and metadata["DeploymentStatus"] == "Deployed"
    assert metadata["SageMakerModelName"] == metadata["EndpointConfigName"] == "storyboard-characters-v1"
    _set_status(sm, arn, "Approved")  # (moto also clears the status on a metadata-only update; SageMaker keeps it)
    repeated = approval.handle(_state_change(arn), runtime)  # a repeated event, or the handler's own update
    assert repeated["action"] == "none" and repeated["reason"].startswith("already handled (Approved)")
    assert len(sm.list_models()["Models"]) == 1

    _set_status(sm, arn, "Rejected")
    assert approval.handle(_state_change(arn), runtime)["action"] == "deleted"
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert approval.handle(_state_change(arn), runtime)["action"] == "none"


def test_endpoint_state_change_cleans_up_what_was_replaced(aws):
    sm = _client("sagemaker")
    runtime = Runtime(parse_config({}), {"sagemaker": sm})
    container = {"Image": LORA_IMAGE, "ModelDataUrl": "s3://data-bucket/m.tar.gz"}
    for name in ("storyboard-characters-v1", "storyboard-characters-v2", "storyboard-characters-v2-mine"):
        sm.create_model(ModelName=name, ExecutionRoleArn=SM_ROLE, PrimaryContainer=container)
        sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": name, "InstanceType": "ml.g4dn.2xlarge",
             "InitialInstanceCount": 1}])
    sm.create_endpoint(EndpointName="storyboard-characters-endpoint", EndpointConfigName="storyboard-characters-v2")
    event = {"source": "aws.sagemaker", "detail-type": "SageMaker Endpoint State Change",
             "detail": {"EndpointName": "storyboard-characters-endpoint", "EndpointStatus": "IN_SERVICE"}}
    assert approval.handle({**event, "detail": {"EndpointName": "other"}}, runtime)["action"] == "none"
    result = approval.handle(event, runtime)
    assert result["action"] == "cleaned"
    assert result["cleanedUp"] == ["endpoint_config storyboard-characters-v1", "model storyboard-characters-v1"]
    assert sorted(m["ModelName"] for m in sm.list_models()["Models"]) == ["storyboard-characters-v2",
                                                                          "storyboard-characters-v2-mine"]
    assert approval.handle(event, runtime)["action"] == "none"


def _throughput(model: str, status: str) -> dict:
    return {"provisionedModelSummaries": [{
        "provisionedModelName": "storyboard-characters", "modelArn": model, "desiredModelArn": model,
        "provisionedModelArn": f"arn:aws:bedrock:us-east-1:{ACCOUNT}:provisioned-model/abcdefabcdef",
        "foundationModelArn": "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-canvas-v1:0",
        "modelUnits": 1, "desiredModelUnits": 1, "status": status, "creationTime": "2026-01-01T00:00:00Z",
        "lastModifiedTime": "2026-01-01T00:00:00Z"}]}


def test_a_failed_approval_is_recorded_not_retriggered_and_retried_by_the_reconciler(aws):
    sm, bedrock = _client("sagemaker"), _client("bedrock")
    runtime = Runtime(parse_config({}), {"sagemaker": sm, "bedrock": bedrock})
    previous = f"arn:aws:bedrock:us-east-1:{ACCOUNT}:custom-model/amazon.nova-canvas-v1:0/aaaaaaaaaaaa"
    model = f"arn:aws:bedrock:us-east-1:{ACCOUNT}:custom-model/amazon.nova-canvas-v1:0/bbbbbbbbbbbb"
    event = {"ModelPackageGroupName": "storyboard-characters", "EvaluationUri": "s3://data-bucket/e.json",
             "CustomModelArn": model, "JobArn": "arn:job", "DryRun": "false", "PipelineExecutionArn": EXECUTION}
    arn = register_model.handle(event, runtime)["ModelPackageArn"]
    _set_status(sm, arn, "Approved")
    with Stubber(bedrock) as stub:
        # the group's throughput is still Updating: it cannot be re-pointed now; each failure is recorded on the
        # package, and that update raises another event, at most EVENT_ATTEMPTS_MAX times
        for attempt in range(1, approval_state.EVENT_ATTEMPTS_MAX + 1):
            stub.add_response("list_provisioned_model_throughputs", _throughput(previous, "Updating"))
            with pytest.raises(ThroughputBusyError):
                approval.handle(_state_change(arn), runtime)
            _set_status(sm, arn, "Approved")  # (moto clears the status on a metadata update; SageMaker keeps it)
            metadata = sm.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"]
            assert metadata["DeploymentAttempts"] == str(attempt)
            assert metadata["DeploymentError"].startswith("Approved: ThroughputBusyError: throughput "
                                                          "storyboard-characters is Updating")
        skipped = approval.handle(_state_change(arn), runtime)  # its own update: no Bedrock call, no new record
        stub.assert_no_pending_responses()
    assert skipped["action"] == "none" and "the reconciler retries it" in skipped["reason"]
    # an hour later the throughput is InService: the reconciler re-points it
    with Stubber(bedrock) as stub:
        stub.add_response("list_provisioned_model_throughputs", _throughput(previous, "InService"))
        stub.add_response("update_provisioned_model_throughput", {}, {
            "provisionedModelId": f"arn:aws:bedrock:us-east-1:{ACCOUNT}:provisioned-model/abcdefabcdef",
            "desiredModelId": model})
        stub.add_response("list_provisioned_model_throughputs", {"provisionedModelSummaries": []})
        report = approval.retry_unhandled(runtime)
        stub.assert_no_pending_responses()
    assert report == [{"package": arn, "outcome": f"repointed: throughput storyboard-characters re-pointed from "
                                                   f"{previous} to {model}; the previous model is no longer served"}]
    _set_status(sm, arn, "Approved")
    metadata = sm.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"]
    assert metadata["ApprovalHandled"] == "Approved" and metadata["DeploymentAttempts"] == "0"
    with Stubber(bedrock) as stub:  # every later event, and the reconciler, leave it alone
        assert approval.handle(_state_change(arn), runtime)["reason"].startswith("already handled")
        assert approval.retry_unhandled(runtime) == []
        stub.assert_no_pending_responses()
