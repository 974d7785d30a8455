"""A2I completion costs a constant number of S3 requests per event, so a review's cost is linear in its loops.

S3 runs on moto; every S3 request the handlers send is counted with a botocore event hook. Human loops are
started through a ``before-call`` hook that answers ``StartHumanLoop`` (moto has no A2I runtime); the callback
answer goes through botocore's Stubber. The figures measured here are in the README's review section.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import boto3
from botocore.awsrequest import AWSResponse
from botocore.stub import ANY, Stubber
from moto import mock_aws

from containers.lambda_handlers import callback_consumer
from containers.lambda_handlers.review_handlers import on_human_loop_status
from containers.lambda_handlers.runtime import Runtime
from core.config import parse_config
from steps.a2i_loops import execution_key, loop_name

ACCOUNT = "123456789012"
EXECUTION = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:pipeline/storyboard/execution/a1b2c3d4e5f6"
TOKEN = "AbCdE12345"
FLOW_ARN = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:flow-definition/storyboard-review"
PER_EVENT_MAX = 5  # read the counter, check the answer, create the marker, swap the counter (+1 spare)


def _review(aws_env, loops: int) -> dict:
    """Start an A2I review of ``loops`` records, deliver every loop's event (plus duplicates), answer it; return
    the S3 requests of each event and of the completion."""
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="bucket")
        rows = [{"image_ref": f"s3://bucket/crops/bunny_{i:05d}.jpg", "alt_text": f"Bunny in scene {i}",
                 "crop_id": f"bunny_{i:05d}", "character": "bunny"} for i in range(loops)]
        s3.put_object(Bucket="bucket", Key="captions/manifest.jsonl",
                      Body="".join(json.dumps(r) + "\n" for r in rows).encode())
        sm, a2i = boto3.client("sagemaker", region_name="us-east-1"), \
            boto3.client("sagemaker-a2i-runtime", region_name="us-east-1")
        a2i.meta.events.register("before-call.sagemaker-a2i-runtime.StartHumanLoop",
                                 lambda params, **kw: (AWSResponse("https://a2i", 200, {}, None),
                                                       {"HumanLoopArn": f"{FLOW_ARN}/loop"}))
        config = parse_config({"review": {"mode": "a2i", "output_s3_uri": "s3://bucket/review",
                                          "flow_definition_arn": FLOW_ARN}})
        runtime = Runtime(config, {"s3": s3, "sagemaker": sm, "sagemaker-a2i-runtime": a2i})
        message = {"token": TOKEN, "pipelineExecutionArn": EXECUTION,
                   "arguments": {"Task": "HumanReview", "ManifestUri": "s3://bucket/captions/manifest.jsonl"}}
        assert callback_consumer.handle_sqs_event({"Records": [{"messageId": "m", "body": json.dumps(message)}]},
                                                  runtime, 5) == {"batchItemFailures": []}
        key = execution_key(EXECUTION, TOKEN)
        names = [loop_name("storyboard", key, i) for i in range(loops)]
        for name in names:
            answer = {"approve": {"on": True}, "edit": {"on": False}, "reject": {"on": False}}
            s3.put_object(Bucket="bucket", Key=f"review/a2i/out/{name}/output.json", Body=json.dumps(
                {"humanAnswers": [{"answerContent": answer, "workerId": "w"}], "humanLoopName": name}).encode())

        requests: list[str] = []
        s3.meta.events.register("before-call.s3", lambda model, **kw: requests.append(model.name))

        def deliver(name: str) -> tuple[str, Counter]:
            requests.clear()
            event = {"detail": {"humanLoopName": name, "humanLoopStatus": "Completed",
                                "humanLoopOutput": {"outputS3Uri": f"s3://bucket/review/a2i/out/{name}/output.json"}}}
            return on_human_loop_status(event, runtime), Counter(requests)

        per_event, outcomes = [], []
        started = time.perf_counter()
        for i, name in enumerate(names[:-1]):
            outcome, counted = deliver(name)
            per_event.append(sum(counted.values()))
            outcomes.append(outcome)
            if i % 10 == 0:  # a duplicate delivery changes nothing
                duplicate, dup_counted = deliver(name)
                assert duplicate == outcome and "PutObject" in dup_counted
                per_event.append(sum(dup_counted.values()))
        with Stubber(sm) as stub:
            stub.add_response("send_pipeline_execution_step_success", {"PipelineExecutionArn": EXECUTION},
                              {"CallbackToken": TOKEN, "ClientRequestToken": ANY, "OutputParameters": ANY})
            last, completion = deliver(names[-1])
            stub.assert_no_pending_responses()
        after, late = deliver(names[0])
        return {"per_event": per_event, "outcomes": outcomes, "last": last, "completion": completion,
                "after": after, "late": sum(late.values()), "seconds": time.perf_counter() - started}


def _check(result: dict, loops: int) -> None:
    assert result["outcomes"][0] == f"waiting 1/{loops}" and result["outcomes"][-1] == f"waiting {loops - 1}/{loops}"
    assert result["last"] == "completed" and result["after"] == "already answered"
    assert max(result["per_event"]) <= PER_EVENT_MAX  # constant per event, whatever the number of loops
    # the completion lists the markers once and reads each marker and each output once
    assert result["completion"]["GetObject"] <= 2 * loops + 4
    assert result["completion"]["ListObjectsV2"] <= loops // 1000 + 1


def test_completion_requests_per_event_are_constant_at_100_loops(aws_env):
    result = _review(aws_env, 100)
    _check(result, 100)


def test_completion_cost_is_linear_at_5000_loops(aws_env):
    small, large = _review(aws_env, 100), _review(aws_env, 5000)
    _check(large, 5000)
    per_loop_small = (sum(small["per_event"]) + sum(small["completion"].values())) / 100
    per_loop_large = (sum(large["per_event"]) + sum(large["completion"].values())) / 5000
    # linear: the requests per loop do not grow with the number of loops (a re-read of every marker per event
    # would make them 50 times larger at 5,000 loops than at 100)
    assert per_loop_large <= per_loop_small * 1.1
    print(f"\n5,000 loops: {sum(large['per_event'])} requests for {len(large['per_event'])} events "
          f"(max {max(large['per_event'])} per event), completion {sum(large['completion'].values())} "
          f"({dict(large['completion'])}); {per_loop_large:.2f} requests per loop, {large['seconds']:.0f} s")


def test_concurrent_events_are_each_counted_once(aws_env):
    from containers.lambda_handlers import review_progress
    from containers.lambda_handlers.storage import S3Store
    from steps.human_loops import LoopStatus

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="bucket")
        store, folder = S3Store(s3), "s3://bucket/review/reviews/k"
        review_progress.initialise(store, folder, 3, FLOW_ARN)
        review_progress.initialise(store, folder, 99, FLOW_ARN)  # a repeated start changes nothing
        stale = review_progress.read(store, folder)  # two events read the counter at the same time ...
        assert review_progress.record(store, folder, LoopStatus("a", "Completed", "s3://x"), stale) == (True, 1, 3)
        # ... the second one's If-Match fails, it reads again and counts 2, not 1
        assert review_progress.record(store, folder, LoopStatus("b", "Completed", "s3://y"), stale) == (True, 2, 3)
        again = review_progress.read(store, folder)
        assert review_progress.record(store, folder, LoopStatus("a", "Completed", "s3://x"), again) == (False, 2, 3)
        # a crash after the marker and before the counter: the reconciler's listing sets the count right
        store.create_if_absent(review_progress.marker_uri(folder, "c"),
                               review_progress.marker_bytes(LoopStatus("c", "Failed", None)))
        review_progress.recount(store, folder, 3)
        assert (review_progress.read(store, folder).done, review_progress.read(store, folder).total) == (3, 3)
