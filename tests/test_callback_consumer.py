"""The callback consumer fails loudly and never hangs: every error a retry cannot fix answers
SendPipelineExecutionStepFailure; throttling and 5xx are retried through batchItemFailures; a message that keeps
failing answers the failure before SQS moves it to the dead-letter queue. Bedrock and SageMaker run on botocore's
Stubber (every request validated against the service model); S3 on moto."""

from __future__ import annotations

import io
import json

import boto3
import numpy as np
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.stub import ANY, Stubber
from moto import mock_aws
from PIL import Image

from containers.lambda_handlers import callback_consumer
from containers.lambda_handlers.runtime import Runtime
from core.config import parse_config
from core.errors import InputError
from steps.retry_policy import is_retryable

ACCOUNT = "123456789012"
EXECUTION = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:pipeline/storyboard/execution/a1b2c3d4e5f6"
TOKEN = "AbCdE12345"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/bedrock-customization"
FAILURE = {"CallbackToken": TOKEN, "FailureReason": ANY, "ClientRequestToken": ANY}


@pytest.fixture
def aws(aws_env):
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="data-bucket")
        for i in range(5):  # the job's images are checked before it starts
            buf = io.BytesIO()
            Image.fromarray(np.random.default_rng(i).integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(buf, "PNG")
            s3.put_object(Bucket="data-bucket", Key=f"crops/b{i}.png", Body=buf.getvalue())
        rows = "".join(json.dumps({"image-ref": f"s3://data-bucket/crops/b{i}.png", "caption": f"Bunny {i}"}) + "\n"
                       for i in range(5))
        s3.put_object(Bucket="data-bucket", Key="review/train.jsonl", Body=rows.encode())
        bedrock = boto3.client("bedrock", region_name="us-east-1")
        sm = boto3.client("sagemaker", region_name="us-east-1")
        calls: list[dict] = []
        sm.meta.events.register("provide-client-params.sagemaker.*",
                                lambda params, model, **kw: calls.append({"op": model.name, **params}))
        runtime = Runtime(parse_config({"finetune": {"dry_run": False}}), {"s3": s3, "bedrock": bedrock,
                                                                          "sagemaker": sm})
        yield runtime, bedrock, sm, calls


def _record(body: dict | str, receives: int = 1, message_id: str = "m0") -> dict:
    return {"messageId": message_id, "body": body if isinstance(body, str) else json.dumps(body),
            "attributes": {"ApproximateReceiveCount": str(receives)}}


def _finetune(**extra: str) -> dict:
    args = {"Task": "FineTune", "TrainingManifestUri": "s3://data-bucket/review/train.jsonl",
            "BaseModelId": "amazon.nova-canvas-v1:0", "StepCount": "1000", "BatchSize": "8",
            "LearningRate": "0.00001", "OutputS3Uri": "s3://data-bucket/finetune/", "RoleArn": ROLE, **extra}
    return {"token": TOKEN, "pipelineExecutionArn": EXECUTION, "arguments": args}


def _event(*records: dict) -> dict:
    return {"Records": list(records)}


@pytest.mark.parametrize(("code", "status", "message"), [
    ("AccessDeniedException", 403, "User is not authorized to perform: bedrock:GetFoundationModel"),
    ("ValidationException", 400, "The provided model identifier is invalid."),
    ("UnrecognizedClientException", 400, "The security token included in the request is invalid."),
])
def test_permanent_aws_errors_fail_the_step_at_once(aws, code, status, message):
    runtime, bedrock, sm, calls = aws
    with Stubber(bedrock) as bstub, Stubber(sm) as sstub:
        bstub.add_client_error("get_foundation_model", code, message, status)
        sstub.add_response("send_pipeline_execution_step_failure", {"PipelineExecutionArn": EXECUTION}, FAILURE)
        result = callback_consumer.handle_sqs_event(_event(_record(_finetune())), runtime, max_receives=5)
        sstub.assert_no_pending_responses()
    assert result == {"batchItemFailures": []}  # answered: the message is consumed, the step is Failed
    assert calls[0]["op"] == "SendPipelineExecutionStepFailure"
    assert calls[0]["FailureReason"].startswith(f"FineTune: {code}: ") and len(calls[0]["FailureReason"]) <= 256


def test_a_role_bedrock_cannot_assume_fails_the_step(aws):
    runtime, bedrock, sm, calls = aws
    active = {"modelDetails": {"modelArn": "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-canvas-v1:0",
                               "modelId": "amazon.nova-canvas-v1:0", "modelLifecycle": {"status": "ACTIVE"}}}
    with Stubber(bedrock) as bstub, Stubber(sm) as sstub:
        bstub.add_response("get_foundation_model", active)
        bstub.add_client_error("create_model_customization_job", "ValidationException",
                               f"Could not assume the role {ROLE}: check its trust policy", 400)
        bstub.add_client_error("get_model_customization_job", "ResourceNotFoundException", "no such job", 404)
        sstub.add_response("send_pipeline_execution_step_failure", {"PipelineExecutionArn": EXECUTION}, FAILURE)
        result = callback_consumer.handle_sqs_event(_event(_record(_finetune())), runtime, max_receives=5)
        bstub.assert_no_pending_responses()
        sstub.assert_no_pending_responses()
    assert result == {"batchItemFailures": []}
    assert "ValidationException: Could not assume the role" in calls[0]["FailureReason"]


def test_input_errors_and_bugs_fail_the_step(aws, monkeypatch):
    runtime, _, sm, calls = aws
    bad_task = {"token": TOKEN, "pipelineExecutionArn": EXECUTION, "arguments": {"Task": "Evaluate"}}

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(callback_consumer.review_handlers, "start_review", broken)
    review = {"token": TOKEN, "pipelineExecutionArn": EXECUTION, "arguments": {"Task": "HumanReview"}}
    with Stubber(sm) as sstub:
        for _ in range(2):
            sstub.add_response("send_pipeline_execution_step_failure", {"PipelineExecutionArn": EXECUTION}, FAILURE)
        result = callback_consumer.handle_sqs_event(_event(_record(bad_task), _record(review, message_id="m1")),
                                                    runtime, max_receives=5)
        sstub.assert_no_pending_responses()
    assert result == {"batchItemFailures": []}
    assert "Task must be one of" in calls[0]["FailureReason"]
    assert calls[1]["FailureReason"] == "HumanReview: KeyError: 'a bug'"


@pytest.mark.parametrize(("code", "status"), [("ThrottlingException", 429), ("ServiceUnavailableException", 503),
                                              ("InternalServerException", 500)])
def test_throttling_and_5xx_are_retried_without_an_answer(aws, code, status):
    runtime, bedrock, sm, calls = aws
    with Stubber(bedrock) as bstub, Stubber(sm) as sstub:
        bstub.add_client_error("get_foundation_model", code, "slow down", status)
        result = callback_consumer.handle_sqs_event(_event(_record(_finetune(), receives=4)), runtime, max_receives=5)
        sstub.assert_no_pending_responses()
    assert result == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
    assert calls == []  # nothing answered: SQS delivers the message again


def test_a_message_that_keeps_failing_fails_the_step_before_the_dead_letter_queue(aws):
    runtime, bedrock, sm, calls = aws
    with Stubber(bedrock) as bstub, Stubber(sm) as sstub:
        bstub.add_client_error("get_foundation_model", "ThrottlingException", "Rate exceeded", 429)
        sstub.add_response("send_pipeline_execution_step_failure", {"PipelineExecutionArn": EXECUTION}, FAILURE)
        result = callback_consumer.handle_sqs_event(_event(_record(_finetune(), receives=5)), runtime, max_receives=5)
        sstub.assert_no_pending_responses()
    # the step is Failed, and the message is still reported failed so that SQS moves it to the DLQ
    assert result == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
    assert calls[0]["FailureReason"] == ("FineTune: still failing after 5 deliveries: ThrottlingException: "
                                         "Rate exceeded")


def test_an_answer_that_fails_keeps_the_message(aws):
    runtime, _, sm, calls = aws
    bad_task = {"token": TOKEN, "pipelineExecutionArn": EXECUTION, "arguments": {"Task": "Nope"}}
    with Stubber(sm) as sstub:
        sstub.add_client_error("send_pipeline_execution_step_failure", "ThrottlingException", "Rate exceeded", 400)
        result = callback_consumer.handle_sqs_event(_event(_record(bad_task)), runtime, max_receives=5)
    assert result == {"batchItemFailures": [{"itemIdentifier": "m0"}]}


def test_unanswerable_messages_go_to_the_dead_letter_queue(aws):
    runtime, _, _, calls = aws
    result = callback_consumer.handle_sqs_event(
        _event(_record("{not json"), _record({"pipelineExecutionArn": EXECUTION}, message_id="m1")), runtime, 5)
    assert result == {"batchItemFailures": [{"itemIdentifier": "m0"}, {"itemIdentifier": "m1"}]}
    assert calls == []


def test_retry_classification_is_botocores():
    def err(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                           "Op")

    assert is_retryable(err("ThrottlingException", 400)) and is_retryable(err("SlowDown", 503))
    assert is_retryable(err("SomethingNew", 502)) and is_retryable(err("SomethingNew", 429))
    assert is_retryable(EndpointConnectionError(endpoint_url="https://bedrock.us-east-1.amazonaws.com"))
    assert not is_retryable(err("AccessDeniedException", 403)) and not is_retryable(err("ValidationException", 400))
    assert not is_retryable(err("ResourceNotFoundException", 404)) and not is_retryable(KeyError("x"))


def test_max_receive_count_comes_from_the_environment():
    env = callback_consumer.MAX_RECEIVE_ENV
    assert callback_consumer.max_receive_count({}) == callback_consumer.DEFAULT_MAX_RECEIVE_COUNT
    assert callback_consumer.max_receive_count({env: "3"}) == 3
    for bad in ("0", "x", "1001"):
        with pytest.raises(InputError, match="maxReceiveCount"):
            callback_consumer.max_receive_count({env: bad})
