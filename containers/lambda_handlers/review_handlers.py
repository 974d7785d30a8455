"""HumanReview on AWS: start the review, complete it from A2I events, reconcile missed events.

Layout under ``review.output_s3_uri`` (``<root>``):

- ``<root>/a2i/``: the flow definition's output (A2I writes
  ``<flow-definition-name>/YYYY/MM/DD/hh/mm/ss/<loop-name>/output.json`` there);
- ``<root>/reviews/<key>/state.json``: the :class:`~steps.review_state.ReviewState` (callback token, loops);
  ``<key>`` is :func:`~steps.a2i_loops.execution_key` and is part of every loop name, so an event for a
  loop leads straight to its review;
- ``<root>/reviews/<key>/loops/<loop-name>.json``: one marker per finished loop (status, output URI),
  created only by the loop's first event;
- ``<root>/reviews/<key>/progress.json``: how many loops of how many have finished
  (:mod:`containers.lambda_handlers.review_progress`), so an event costs a constant number of S3 requests;
- ``<root>/reviews/<key>/reviewed/`` (or the step's ``OutputUri``): ``reviewed_manifest.jsonl``,
  ``train.jsonl``, ``review_report.json``;
- ``<root>/reviews/<key>/completed.json``: written once the callback is answered.

The callback is answered when the counter reaches the number of loops; only then are the markers listed and
read, once (measured on moto: a constant number of requests per event at 100 and at 5,000 loops; see
``tests/test_a2i_completion.py``). Two events finishing at once may both answer: they send the same request
with the same ``ClientRequestToken``, which SageMaker treats as one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import ClientError

from containers.lambda_handlers import review_progress
from containers.lambda_handlers.callbacks import SageMakerPipelineCallback
from containers.lambda_handlers.runtime import Runtime, default_runtime
from containers.lambda_handlers.storage import (
    ObjectStore,
    join_uri,
    parent_uri,
    read_json,
    read_jsonl,
    store_for,
    write_json,
    write_jsonl,
)
from core.errors import InputError
from core.mlops_config import flow_definition_name, human_task_ui_name
from steps.a2i_loops import build_loop_input, execution_key, loop_name, parse_loop_name
from steps.a2i_resources import ensure_flow_definition, ensure_human_task_ui, flow_definition_request
from steps.a2i_template import review_template
from steps.auto_review import AutoReviewPolicy, character_aliases
from steps.human_loops import A2IHumanLoops, HumanLoops, LoopStatus
from steps.image_probes import ImageProbe, LocalImageProbe, S3ImageProbe
from steps.review import (
    ReviewResult,
    apply_decisions,
    check_labelling_rows,
    check_training_count,
    item_id_of,
    meta,
)
from steps.review_state import ReviewState, decisions_from_loops

log = logging.getLogger(__name__)

A2I_EVENT_SOURCE = "aws.sagemaker"
A2I_DETAIL_TYPE = "SageMaker A2I HumanLoop Status Change"


def _store(runtime: Runtime, uri: str) -> ObjectStore:
    return store_for(uri, runtime.client("s3") if uri.startswith("s3://") else None)


def review_root(runtime: Runtime, manifest_uri: str) -> str:
    """``review.output_s3_uri``, else ``<manifest folder>/review``."""
    return runtime.config.review.output_s3_uri or join_uri(parent_uri(manifest_uri), "review")


def _probe(runtime: Runtime, manifest_uri: str) -> ImageProbe:
    if manifest_uri.startswith("s3://"):
        return S3ImageProbe(runtime.client("s3"))
    return LocalImageProbe(parent_uri(manifest_uri))


def write_reviewed(store: ObjectStore, folder: str, result: ReviewResult, mode: str) -> str:
    """Write the reviewed manifests and report into ``folder``; return the ``train.jsonl`` URI."""
    write_jsonl(store, join_uri(folder, "reviewed_manifest.jsonl"), result.reviewed_rows)
    train = join_uri(folder, "train.jsonl")
    write_jsonl(store, train, result.training_rows)
    write_json(store, join_uri(folder, "review_report.json"), result.report(mode))
    return train


def start_review(callback_token: str, execution_arn: str, args: Mapping[str, str], runtime: Runtime) -> dict:
    """Handle a HumanReview callback message.

    Arguments: ``ManifestUri`` (the labelling manifest), ``ReviewMode`` (``auto`` or ``a2i``; default
    ``review.mode``), optionally ``OutputUri`` (folder for the reviewed manifests; default
    ``<review root>/reviews/<key>/reviewed``). ``ReviewMode=auto`` reviews at once and answers the
    callback; ``a2i`` starts one human loop per record and answers later
    (:func:`human_loop_status_handler`).

    Returns:
        A summary for the log: ``{"mode", ...}``.

    Raises:
        InputError: bad arguments or manifest, a missing A2I setting, or too few records kept (auto).
    """
    manifest_uri = str(args.get("ManifestUri") or "").strip()
    if not manifest_uri:
        raise InputError("HumanReview needs ManifestUri: the labelling manifest written by CaptionImages")
    mode = str(args.get("ReviewMode") or runtime.config.review.mode).strip().lower()
    if mode not in ("auto", "a2i"):
        raise InputError(f"ReviewMode must be 'auto' or 'a2i', got {mode!r}")
    store = _store(runtime, manifest_uri)
    rows = read_jsonl(store, manifest_uri)
    check_labelling_rows(rows, manifest_uri)
    key = execution_key(execution_arn, callback_token)
    reviewed = str(args.get("OutputUri") or "").strip() or \
        join_uri(review_root(runtime, manifest_uri), "reviews", key, "reviewed")
    callback = SageMakerPipelineCallback(runtime.client("sagemaker"))
    if mode == "auto":
        policy = AutoReviewPolicy(runtime.config.review.auto, _probe(runtime, manifest_uri),
                                  character_aliases(runtime.config.characters))
        result = apply_decisions(rows, policy.review(rows))
        train = write_reviewed(_store(runtime, reviewed), reviewed, result, "auto")
        check_training_count(result)
        callback.success(callback_token, result.outputs(train), key)
        return {"mode": "auto", **result.outputs(train)}
    return _start_a2i(callback_token, execution_arn, manifest_uri, rows, key, reviewed, runtime)


def a2i_flow_definition(runtime: Runtime) -> str:
    """The flow definition ARN: ``review.flow_definition_arn``, or the task UI and flow definition
    created (idempotently) from the configuration."""
    review = runtime.config.review
    if review.flow_definition_arn:
        return review.flow_definition_arn
    if not review.output_s3_uri:
        raise InputError("ReviewMode a2i needs review.output_s3_uri (s3://bucket/prefix) for A2I output and "
                         "review state")
    sm = runtime.client("sagemaker")
    ui_arn = ensure_human_task_ui(sm, human_task_ui_name(review, runtime.config.project), review_template())
    request = flow_definition_request(flow_definition_name(review, runtime.config.project), review, ui_arn,
                                      join_uri(review.output_s3_uri, "a2i"))
    return ensure_flow_definition(sm, request)


def _start_a2i(callback_token: str, execution_arn: str, manifest_uri: str, rows: list[dict], key: str,
               reviewed: str, runtime: Runtime) -> dict:
    review = runtime.config.review
    if not review.output_s3_uri:
        raise InputError("ReviewMode a2i needs review.output_s3_uri (s3://bucket/prefix): the review state and "
                         "the reviewed manifests are kept there")
    if len(rows) > review.max_loops:
        raise InputError(f"{len(rows)} records but review.max_loops is {review.max_loops} (A2I allows 5,000 human "
                         f"loops in flight per flow definition): review fewer records or split the manifest")
    flow_arn = a2i_flow_definition(runtime)
    folder = join_uri(review.output_s3_uri, "reviews", key)
    store = _store(runtime, folder)
    state_uri = join_uri(folder, "state.json")
    if store.exists(state_uri):
        state = ReviewState.from_json(read_json(store, state_uri))
    else:
        loops = [{"name": loop_name(runtime.config.project, key, i), "item_id": item_id_of(row, i), "index": i}
                 for i, row in enumerate(rows)]
        state = ReviewState(execution_arn, callback_token, key, manifest_uri, flow_arn, reviewed, loops)
        write_json(store, state_uri, state.to_json())  # before any loop, so an early event finds it
    review_progress.initialise(store, folder, len(state.loops), flow_arn)
    service = A2IHumanLoops(runtime.client("sagemaker-a2i-runtime"), flow_arn)
    for row, loop in zip(rows, state.loops, strict=True):
        character = meta(row, "character")
        display = runtime.config.character(character).caption_name if isinstance(character, str) and character \
            else None
        service.start(loop["name"], build_loop_input(row, loop["item_id"], loop["index"], callback_token,
                                                     execution_arn, display))
    log.info("started %d human loops for %s (%s)", len(state.loops), execution_arn, key)
    return {"mode": "a2i", "loops": len(state.loops), "state": state_uri}


def _folder_for_key(runtime: Runtime, key: str) -> str | None:
    root = runtime.config.review.output_s3_uri
    return join_uri(root, "reviews", key) if root else None


def load_state(store: ObjectStore, folder: str) -> ReviewState | None:
    """The review state in ``folder``, or ``None``."""
    uri = join_uri(folder, "state.json")
    return ReviewState.from_json(read_json(store, uri)) if store.exists(uri) else None


def _progress(store: ObjectStore, folder: str) -> review_progress.Progress | None:
    """The review's counter; for a review started before counters existed, created from its state and a listing."""
    progress = review_progress.read(store, folder)
    if progress is None:
        state = load_state(store, folder)
        if state is None:
            return None
        review_progress.initialise(store, folder, len(state.loops), state.flow_definition_arn,
                                   done=len(_markers(store, folder)))
        progress = review_progress.read(store, folder)
    return progress


def _markers(store: ObjectStore, folder: str) -> dict[str, LoopStatus]:
    out = {}
    for uri in store.list(join_uri(folder, "loops")):
        if uri.endswith(".json"):
            m = read_json(store, uri)
            out[m["name"]] = LoopStatus(m["name"], m["status"], m.get("outputS3Uri"), m.get("failureReason"))
    return out


def try_complete(store: ObjectStore, folder: str, runtime: Runtime) -> str:
    """Answer the review's callback if every loop has finished; returns what happened.

    Returns:
        ``"completed"``, ``"failed"`` (too few records kept), ``"waiting k/n"``, ``"already answered"``
        or ``"no state"``.
    """
    state = load_state(store, folder)
    if state is None:
        return "no state"
    completed_uri = join_uri(folder, "completed.json")
    if store.exists(completed_uri):
        return "already answered"
    markers = _markers(store, folder)
    names = [loop["name"] for loop in state.loops]
    done = [n for n in names if n in markers and markers[n].terminal]
    if len(done) < len(names):
        return f"waiting {len(done)}/{len(names)}"
    outputs = {}
    for name in names:
        status = markers[name]
        if status.status == "Completed" and status.output_uri:
            outputs[name] = read_json(_store(runtime, status.output_uri), status.output_uri)
    rows = read_jsonl(_store(runtime, state.manifest_uri), state.manifest_uri)
    result = apply_decisions(rows, decisions_from_loops(rows, state, markers, outputs))
    train = write_reviewed(store, state.output_uri, result, "a2i")
    callback = SageMakerPipelineCallback(runtime.client("sagemaker"))
    try:
        check_training_count(result)
    except InputError as err:
        callback.failure(state.callback_token, f"HumanReview: {err}", state.key)
        write_json(store, completed_uri, {"answer": "failure", "reason": str(err), "at": _now()})
        return "failed"
    callback.success(state.callback_token, result.outputs(train), state.key)
    write_json(store, completed_uri, {"answer": "success", **result.outputs(train), "at": _now()})
    return "completed"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def on_human_loop_status(event: Mapping[str, Any], runtime: Runtime) -> str:
    """Handle one ``SageMaker A2I HumanLoop Status Change`` event (see the module docstring)."""
    detail = event.get("detail") or {}
    name = str(detail.get("humanLoopName") or "")
    status = str(detail.get("humanLoopStatus") or "")
    parsed = parse_loop_name(name)
    if parsed is None:
        return f"ignored: {name!r} is not a storyboard loop name"
    if status not in ("Completed", "Failed", "Stopped"):
        return f"ignored: status {status}"
    folder = _folder_for_key(runtime, parsed[0])
    if folder is None:
        return "ignored: review.output_s3_uri is not configured"
    store = _store(runtime, folder)
    progress = _progress(store, folder)
    if progress is None:
        return f"ignored: no review state for {name}"
    if store.exists(join_uri(folder, "completed.json")):
        return "already answered"
    output_uri = (detail.get("humanLoopOutput") or {}).get("outputS3Uri")
    loop = LoopStatus(name, status, output_uri, detail.get("failureReason"))
    if status == "Completed" and not output_uri:  # the event lacks the output: ask A2I
        loop = A2IHumanLoops(runtime.client("sagemaker-a2i-runtime"), progress.flow_definition_arn).status(name)
    _, done, total = review_progress.record(store, folder, loop, progress)
    if done < total:
        return f"waiting {done}/{total}"
    return try_complete(store, folder, runtime)


def human_loop_status_handler(event: Mapping[str, Any], context: Any = None, runtime: Runtime | None = None) -> dict:
    """Lambda entry point for the A2I status EventBridge rule."""
    outcome = on_human_loop_status(event, runtime or default_runtime())
    log.info("human loop event: %s", outcome)
    return {"outcome": outcome}


def stop_review(callback_token: str, execution_arn: str, runtime: Runtime,
                loops_service: HumanLoops | None = None) -> list[str]:
    """Stop the review's unfinished loops (a ``Stopping`` message); returns the loops stopped.

    The callback is answered by the caller.
    """
    folder = _folder_for_key(runtime, execution_key(execution_arn, callback_token))
    if folder is None:
        return []
    store = _store(runtime, folder)
    state = load_state(store, folder)
    if state is None:
        return []
    markers = _markers(store, folder)
    service = loops_service or A2IHumanLoops(runtime.client("sagemaker-a2i-runtime"), state.flow_definition_arn)
    stopped = []
    for loop in state.loops:
        if loop["name"] not in markers:
            service.stop(loop["name"])
            stopped.append(loop["name"])
    write_json(store, join_uri(folder, "completed.json"), {"answer": "stopped", "loops_stopped": len(stopped),
                                                          "at": _now()})
    return stopped


def reconcile_reviews(runtime: Runtime, now: datetime | None = None,
                      loops_service: HumanLoops | None = None) -> list[dict[str, str]]:
    """Find unanswered reviews; record loops whose events were missed; enforce the watchdog.

    For each review without ``completed.json``: every loop without a marker is described
    (``describe_human_loop``); finished ones get a marker; then the review completes if it can. A
    review older than ``review.watchdog_hours`` has its remaining loops stopped and its step failed.
    """
    root = runtime.config.review.output_s3_uri
    if not root:
        return []
    store = _store(runtime, root)
    report = []
    for folder in store.list_folders(join_uri(root, "reviews")):
        state = load_state(store, folder)
        if state is None or store.exists(join_uri(folder, "completed.json")):
            continue
        service = loops_service or A2IHumanLoops(runtime.client("sagemaker-a2i-runtime"), state.flow_definition_arn)
        markers = _markers(store, folder)
        for loop in state.loops:
            if loop["name"] in markers:
                continue
            try:
                status = service.status(loop["name"])
            except ClientError as err:
                log.warning("describe_human_loop %s: %s", loop["name"], err)
                continue
            if status.terminal:
                store.create_if_absent(review_progress.marker_uri(folder, status.name),
                                       review_progress.marker_bytes(status))
                markers[status.name] = status
        if review_progress.read(store, folder) is None:
            review_progress.initialise(store, folder, len(state.loops), state.flow_definition_arn)
        review_progress.recount(store, folder, len(markers))
        age = state.age_hours(now)
        outcome = try_complete(store, folder, runtime)
        if outcome.startswith("waiting") and age > runtime.config.review.watchdog_hours:
            stopped = stop_review(state.callback_token, state.execution_arn, runtime, service)
            SageMakerPipelineCallback(runtime.client("sagemaker")).failure(
                state.callback_token, f"HumanReview watchdog: {len(stopped)} human loops unfinished after "
                                      f"{age:.0f} h (review.watchdog_hours {runtime.config.review.watchdog_hours:g})",
                state.key)
            outcome = "watchdog"
        report.append({"review": state.key, "outcome": outcome})
    return report
