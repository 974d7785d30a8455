"""Step 3, HumanReview: the automatic policy, A2I names/inputs/outputs, the template, the local handler
and the local review page. AWS handlers are tested in test_lambda_handlers.py."""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from botocore.stub import ANY, Stubber
from PIL import Image

from containers.lambda_handlers.local import CALLBACK_HANDLERS
from core.config import parse_config
from core.errors import InputError, TooFewRecordsError
from core.mlops_config import AutoReviewPolicyConfig
from steps.a2i_loops import (
    A2I_MAX_INPUT_BYTES,
    build_loop_input,
    decision_from_output,
    execution_key,
    loop_name,
    parse_loop_name,
)
from steps.a2i_resources import ensure_flow_definition, ensure_human_task_ui, flow_definition_request
from steps.a2i_template import TEMPLATE_MAX_CHARS, check_template, review_template
from steps.auto_review import AutoReviewPolicy
from steps.image_probes import LocalImageProbe
from steps.local_review import LocalHumanLoops, ReviewQueue, create_review_app, reference_images, serve_local_review
from steps.request_validation import request_problems
from steps.review import apply_decisions
from steps.review_state import ReviewState, decisions_from_loops


def _image(path: Path, size: tuple[int, int] = (512, 512), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)
    return path


def _manifest(folder: Path, n: int = 6, **overrides: dict) -> Path:
    """A labelling manifest of ``n`` valid records (images 512 px), with per-index overrides."""
    rows = []
    for i in range(n):
        ch = "bunny" if i % 2 == 0 else "sintel"
        name = f"{ch}_clip_f{i:03d}_0"
        _image(folder / "crops" / f"{name}.jpg", seed=i)
        row = {"image_ref": f"crops/{name}.jpg", "alt_text": f"{ch.capitalize()} stands in a sunny meadow",
               "crop_id": name, "character": ch, "needs_review": False}
        row.update(overrides.get(str(i), {}))
        rows.append(row)
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def config():
    return parse_config({"characters": [{"name": "bunny", "display_name": "Buck"}, {"name": "sintel"}]})


# -- automatic policy -----------------------------------------------------------------------------------


def test_policy_approves_valid_records_and_rejects_each_kind_of_problem(tmp_path):
    _image(tmp_path / "small.jpg", (256, 256))
    _image(tmp_path / "wide.jpg", (2600, 512))
    _image(tmp_path / "ok.jpg")
    (tmp_path / "not_an_image.jpg").write_text("hello")
    rows = [
        {"image_ref": "ok.jpg", "alt_text": "Bunny jumps over a log", "character": "bunny", "crop_id": "a"},
        {"image_ref": "small.jpg", "alt_text": "Bunny sits", "character": "bunny", "crop_id": "b"},
        {"image_ref": "wide.jpg", "alt_text": "Bunny runs", "character": "bunny", "crop_id": "c"},
        {"image_ref": "ok.jpg", "alt_text": "a rabbit in a field", "character": "bunny", "crop_id": "d"},
        {"image_ref": "ok.jpg", "alt_text": "ok", "character": "bunny", "crop_id": "e"},
        {"image_ref": "not_an_image.jpg", "alt_text": "Bunny again", "character": "bunny", "crop_id": "f"},
        {"image_ref": "missing.jpg", "alt_text": "Bunny again", "character": "bunny", "crop_id": "g"},
        {"image_ref": "bad name!.jpg", "alt_text": "Bunny again", "character": "bunny", "crop_id": "h"},
        {"image_ref": "ok.jpg", "alt_text": "Bunny, flagged", "metadata": {"character": "bunny", "needs_review": True}},
    ]
    policy = AutoReviewPolicy(AutoReviewPolicyConfig(reject_duplicate_images=False), LocalImageProbe(tmp_path))
    decisions = policy.review(rows)
    assert [d.decision for d in decisions] == ["approved"] + ["rejected"] * 8
    reasons = [" ".join(d.reasons) for d in decisions]
    assert "512 to 4096" in reasons[1]
    assert "aspect ratio" in reasons[2]
    assert "does not name the character" in reasons[3]
    assert "3 to 1024" in reasons[4]
    assert "cannot be read" in reasons[5]
    assert "does not exist" in reasons[6]
    assert "file names may hold only" in reasons[7]
    assert "needs_review" in reasons[8]
    assert decisions[8].item_id == "item-00008"  # no crop_id: index-based id
    assert all(d.reasons for d in decisions)


def test_policy_options_change_the_verdicts(tmp_path):
    _image(tmp_path / "ok.jpg")
    _image(tmp_path / "ok2.jpg", seed=1)
    rows = [{"image_ref": "ok.jpg", "alt_text": "  Buck   waves ", "character": "bunny", "needs_review": True},
            {"image_ref": "ok.jpg", "alt_text": "Buck waves again", "character": "bunny"},
            {"image_ref": "ok2.jpg", "alt_text": "no name here", "character": "bunny"}]
    strict = AutoReviewPolicy(AutoReviewPolicyConfig(), LocalImageProbe(tmp_path), {"bunny": ["bunny", "Buck"]})
    assert [d.decision for d in strict.review(rows)] == ["rejected", "approved", "rejected"]
    lenient = AutoReviewPolicy(AutoReviewPolicyConfig(reject_needs_review=False, require_character_name=False),
                               LocalImageProbe(tmp_path), {"bunny": ["bunny", "Buck"]})
    out = lenient.review(rows)
    assert [d.decision for d in out] == ["edited", "rejected", "approved"]
    assert out[0].caption == "Buck waves" and out[0].original_caption == "  Buck   waves "
    assert any("reject_needs_review is false" in r for r in out[0].reasons)
    assert "duplicate" in out[1].reasons[0]


def test_apply_decisions_builds_exact_training_rows(tmp_path):
    _image(tmp_path / "a.jpg")
    rows = [{"image_ref": "a.jpg", "alt_text": "Bunny  hops", "character": "bunny", "crop_id": "x"},
            {"image_ref": "b.jpg", "alt_text": "Bunny hops", "character": "bunny", "crop_id": "y"}]
    result = apply_decisions(rows, AutoReviewPolicy(probe=LocalImageProbe(tmp_path)).review(rows))
    assert (result.approved, result.edited, result.rejected) == (0, 1, 1)
    assert result.training_rows == [{"image-ref": "a.jpg", "caption": "Bunny hops"}]
    assert result.reviewed_rows[0]["review"]["original_caption"] == "Bunny  hops"
    assert result.reviewed_rows[1]["review"]["decision"] == "rejected"
    assert result.outputs("u") == {"ReviewedManifestUri": "u", "ApprovedCount": "0", "EditedCount": "1",
                                   "RejectedCount": "1"}


# -- local handler --------------------------------------------------------------------------------------


def test_local_human_review_writes_both_manifests(tmp_path, config):
    manifest = _manifest(tmp_path / "data", 7, **{"3": {"alt_text": "a girl on a cliff"},
                                                   "4": {"needs_review": True}})
    run = tmp_path / "run" / "HumanReview"
    out = CALLBACK_HANDLERS["HumanReview"]({"ManifestUri": str(manifest), "ReviewMode": "auto"}, run, config)
    assert set(out) == {"ReviewedManifestUri", "ApprovedCount", "EditedCount", "RejectedCount"}
    assert all(isinstance(v, str) for v in out.values())
    assert (int(out["ApprovedCount"]), int(out["EditedCount"]), int(out["RejectedCount"])) == (5, 0, 2)
    train = [json.loads(line) for line in Path(out["ReviewedManifestUri"]).read_text().splitlines()]
    assert len(train) == 5 and all(set(r) == {"image-ref", "caption"} for r in train)
    assert all(Path(r["image-ref"]).is_absolute() and Path(r["image-ref"]).is_file() for r in train)
    reviewed = [json.loads(line) for line in (run / "reviewed_manifest.jsonl").read_text().splitlines()]
    assert len(reviewed) == 7 and {r["review"]["decision"] for r in reviewed} == {"approved", "rejected"}
    assert reviewed[3]["crop_id"] == "sintel_clip_f003_0"
    report = json.loads((run / "review_report.json").read_text())
    assert report["training_records"] == 5 and report["rejection_reasons"]


def test_local_human_review_fails_clearly(tmp_path, config):
    manifest = _manifest(tmp_path, 6, **{str(i): {"needs_review": True} for i in range(2, 6)})
    with pytest.raises(TooFewRecordsError, match="at least 5"):
        CALLBACK_HANDLERS["HumanReview"]({"ManifestUri": str(manifest), "ReviewMode": "auto"}, tmp_path / "r", config)
    assert (tmp_path / "r" / "review_report.json").exists()  # the reasons are kept for the user
    with pytest.raises(InputError, match="needs Amazon A2I"):
        CALLBACK_HANDLERS["HumanReview"]({"ManifestUri": str(manifest), "ReviewMode": "a2i"}, tmp_path / "r", config)
    with pytest.raises(InputError, match="ReviewMode"):
        CALLBACK_HANDLERS["HumanReview"]({"ManifestUri": str(manifest), "ReviewMode": "maybe"}, tmp_path / "r",
                                         config)
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"image-ref": "a.jpg", "caption": "Bunny"}) + "\n")
    with pytest.raises(InputError, match="labelling manifest"):
        CALLBACK_HANDLERS["HumanReview"]({"ManifestUri": str(train)}, tmp_path / "r", config)
    with pytest.raises(InputError, match="does not exist"):
        CALLBACK_HANDLERS["HumanReview"]({"ManifestUri": str(tmp_path / "nope.jsonl")}, tmp_path / "r", config)


def test_policy_on_real_reference_crops(media, tmp_path):
    refs = sorted((media / "references").glob("*/*.png"))
    rows = [{"image_ref": str(p), "alt_text": f"{p.parent.name.capitalize()} in a scene from the film",
             "character": p.parent.name} for p in refs]
    decisions = AutoReviewPolicy(probe=LocalImageProbe()).review(rows)
    for path, decision in zip(refs, decisions, strict=True):
        with Image.open(path) as im:
            big_enough = min(im.size) >= 512 and max(im.size) <= 4096 and max(im.size) / min(im.size) <= 4
        assert (decision.decision == "approved") == big_enough, (path, decision.reasons)


# -- A2I names, inputs, outputs, template ----------------------------------------------------------------


def test_loop_names_are_valid_deterministic_and_parseable():
    key = execution_key("arn:aws:sagemaker:us-east-1:123456789012:pipeline/p/execution/abc", "AbCdE12345")
    assert key == execution_key("arn:aws:sagemaker:us-east-1:123456789012:pipeline/p/execution/abc", "AbCdE12345")
    assert key != execution_key("arn:aws:sagemaker:us-east-1:123456789012:pipeline/p/execution/abc", "AbCdE12346")
    for prefix in ("storyboard", "My_Project--2-", "x" * 40 + "-y"):
        name = loop_name(prefix, key, 4999)
        assert len(name) <= 63 and name == name.lower()
        assert parse_loop_name(name) == (key, 4999)
        params = {"HumanLoopName": name, "HumanLoopInput": {"InputContent": "{}"},
                  "FlowDefinitionArn": "arn:aws:sagemaker:us-east-1:123456789012:flow-definition/f"}
        assert request_problems("sagemaker-a2i-runtime", "StartHumanLoop", params) == []
    assert parse_loop_name("someone-elses-loop") is None
    with pytest.raises(InputError):
        loop_name("---", key, 1)


def test_loop_input_carries_token_and_item_and_respects_size_limit():
    row = {"image_ref": "s3://b/crops/x.jpg", "alt_text": "Bunny hops", "character": "bunny"}
    content = json.loads(build_loop_input(row, "x", 3, "AbCdE12345", "arn:exec", "Buck"))
    assert content["taskObject"] == "s3://b/crops/x.jpg" and content["character"] == "Buck"
    assert (content["callbackToken"], content["itemId"], content["index"]) == ("AbCdE12345", "x", 3)
    with pytest.raises(InputError, match="3145728"):
        build_loop_input({**row, "alt_text": "x" * (A2I_MAX_INPUT_BYTES + 1)}, "x", 3, "t", "e")


def _output(*answers: dict, workers: tuple[str, ...] = ("w1", "w2", "w3")) -> dict:
    return {"humanAnswers": [{"answerContent": a, "workerId": w} for a, w in zip(answers, workers, strict=False)],
            "inputContent": {"itemId": "x"}, "humanLoopName": "loop"}


def _radio(choice: str, caption: str | None = None, reason: str = "") -> dict:
    out = {c: {"on": c == choice} for c in ("approve", "edit", "reject")}
    if caption is not None:
        out["caption"] = caption
    out["reason"] = reason
    return out


def test_decisions_from_a2i_answers():
    original = "Bunny hops in the grass"
    assert decision_from_output(_output(_radio("approve", original)), "x", original).decision == "approved"
    edited = decision_from_output(_output(_radio("edit", "Bunny hops over a log")), "x", original)
    assert (edited.decision, edited.caption) == ("edited", "Bunny hops over a log")
    silent_edit = decision_from_output(_output(_radio("approve", "Bunny naps")), "x", original)
    assert silent_edit.decision == "edited"  # a changed caption is an edit whatever the button
    rejected = decision_from_output(_output(_radio("reject", reason="blurred")), "x", original)
    assert rejected.decision == "rejected" and "blurred" in rejected.reasons[0]
    assert decision_from_output(_output({"caption": original}), "x", original).decision == "rejected"
    assert decision_from_output(_output(_radio("edit", "ab")), "x", original).decision == "rejected"
    assert decision_from_output(_output(), "x", original).decision == "rejected"
    majority = decision_from_output(_output(_radio("approve"), _radio("reject"), _radio("approve")), "x", original)
    assert majority.decision == "approved" and majority.reviewer == "a2i:w1,w2,w3"
    tie = decision_from_output(_output(_radio("approve"), _radio("reject")), "x", original)
    assert tie.decision == "rejected" and "disagreed" in tie.reasons[0]
    assert decision_from_output(_output({"decision": "approve"}), "x", original).decision == "approved"


def test_template_is_valid_and_checked():
    text = review_template()
    assert len(text) <= TEMPLATE_MAX_CHARS
    assert "grant_read_access" in text and "<crowd-form>" in text
    for bad in ("", "<crowd-form></crowd-form>", text.replace("grant_read_access", "x"), text + "x" * 130_000):
        with pytest.raises(InputError):
            check_template(bad)


def test_task_ui_and_flow_definition_are_created_idempotently():
    import boto3

    sm = boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b")
    ui_arn = "arn:aws:sagemaker:us-east-1:123456789012:human-task-ui/storyboard-review-ui"
    flow_arn = "arn:aws:sagemaker:us-east-1:123456789012:flow-definition/storyboard-review"
    workteam = "arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/t"
    review = parse_config({"review": {"workteam_arn": workteam,
                                      "role_arn": "arn:aws:iam::123456789012:role/a2i"}}).review
    request = flow_definition_request("storyboard-review", review, ui_arn, "s3://bucket/review/a2i")
    assert "HumanLoopRequestSource" not in request
    with Stubber(sm) as stub:
        stub.add_client_error("describe_human_task_ui", "ResourceNotFound")
        stub.add_response("create_human_task_ui", {"HumanTaskUiArn": ui_arn},
                          {"HumanTaskUiName": "storyboard-review-ui", "UiTemplate": {"Content": ANY}})
        stub.add_client_error("describe_flow_definition", "ResourceNotFound")
        stub.add_response("create_flow_definition", {"FlowDefinitionArn": flow_arn}, request)
        stub.add_response("describe_flow_definition", {  # loops wait for Active (steps.a2i_flow)
            "FlowDefinitionArn": flow_arn, "FlowDefinitionName": "storyboard-review", "FlowDefinitionStatus": "Active",
            "CreationTime": "2026-01-01", "OutputConfig": {"S3OutputPath": "s3://bucket/review/a2i"},
            "RoleArn": "arn:aws:iam::123456789012:role/a2i"}, {"FlowDefinitionName": "storyboard-review"})
        stub.add_response("describe_human_task_ui", {
            "HumanTaskUiArn": ui_arn, "HumanTaskUiName": "storyboard-review-ui", "CreationTime": "2026-01-01",
            "UiTemplate": {}})
        stub.add_response("describe_flow_definition", {
            "FlowDefinitionArn": flow_arn, "FlowDefinitionName": "storyboard-review", "FlowDefinitionStatus": "Active",
            "CreationTime": "2026-01-01", "OutputConfig": {"S3OutputPath": "s3://bucket/review/a2i"},
            "RoleArn": "arn:aws:iam::123456789012:role/a2i"})
        assert ensure_human_task_ui(sm, "storyboard-review-ui", review_template()) == ui_arn
        assert ensure_flow_definition(sm, request) == flow_arn
        assert ensure_human_task_ui(sm, "storyboard-review-ui", review_template()) == ui_arn  # exists: reused
        assert ensure_flow_definition(sm, request) == flow_arn
        stub.assert_no_pending_responses()
    with pytest.raises(InputError, match="workteam_arn"):
        flow_definition_request("f", parse_config({}).review, ui_arn, "s3://b/p")


# -- local review page ----------------------------------------------------------------------------------


def _started_loops(tmp_path: Path, n: int = 3) -> tuple[list[dict], ReviewState, LocalHumanLoops, list[str]]:
    manifest = _manifest(tmp_path, n)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    loops = LocalHumanLoops(tmp_path / "loops")
    key = execution_key("local", "t")
    state = ReviewState("local", "t", key, str(manifest), "local", str(tmp_path),
                        [{"name": loop_name("storyboard", key, i), "item_id": r["crop_id"], "index": i}
                         for i, r in enumerate(rows)])
    for row, loop in zip(rows, state.loops, strict=True):
        loops.start(loop["name"], build_loop_input(row, loop["item_id"], loop["index"], "t", "local"))
    return rows, state, loops, [loop["name"] for loop in state.loops]


def _references(folder: Path) -> Path:
    for k in range(2):
        _image(folder / "bunny" / f"ref_{k:03d}.png", (128, 128), seed=10 + k)
    _image(folder / "sintel" / "ref_000.png", (128, 128), seed=20)
    (folder / "sintel" / "notes.txt").write_text("not an image")
    return folder


def _token(page: str) -> str:
    return re.search(r'name="token" value="([^"]+)"', page).group(1)


def test_review_app_shows_crop_references_progress_and_records_answers(tmp_path):
    rows, state, loops, names = _started_loops(tmp_path, 3)
    references = reference_images(_references(tmp_path / "refs"))
    queue = ReviewQueue(loops, names, LocalImageProbe(tmp_path).resolve, references)
    done_page = threading.Event()
    client = create_review_app(queue, on_done_page=done_page.set).test_client()

    assert client.get("/").headers["Location"] == f"/item/{names[0]}"
    page = client.get(f"/item/{names[0]}").get_data(as_text=True)
    assert "0 of 3</b> reviewed" in page and "Bunny stands in a sunny meadow" in page
    assert f'src="/image/{names[0]}"' in page and "512 × 512" in page
    assert page.count('src="/reference/bunny/') == 2 and "/reference/sintel/" not in page
    assert all(f"<kbd>{k}</kbd>" in page for k in ("a", "e", "r", "n", "j"))
    sintel_page = client.get(f"/item/{names[1]}").get_data(as_text=True)
    assert sintel_page.count('src="/reference/sintel/') == 1  # notes.txt is no reference image
    crop = client.get(f"/image/{names[0]}")
    assert crop.mimetype == "image/jpeg" and crop.data == (tmp_path / rows[0]["image_ref"]).read_bytes()
    assert client.get("/reference/bunny/1").mimetype == "image/png"
    for url in ("/reference/bunny/2", "/reference/dragon/0", "/image/nope", "/item/nope"):
        assert client.get(url).status_code == 404, url
    assert client.get("/", headers={"Host": "evil.example:80"}).status_code == 400  # DNS rebinding

    token = _token(page)
    form = {"token": token, "caption": rows[0]["alt_text"], "reason": ""}
    assert client.post(f"/item/{names[0]}", data={**form, "token": "forged", "decision": "approve"}).status_code == 403
    assert client.post(f"/item/{names[0]}", data={**form, "decision": "maybe"}).status_code == 400
    assert not loops.status(names[0]).terminal
    # skip the first record (n), answer the second and third, then come back to the first
    assert queue.neighbour(names[0], 1) == names[1] and queue.neighbour(names[0], -1) == names[2]
    moved = client.post(f"/item/{names[1]}", data={**form, "decision": "edit", "caption": " Sintel  climbs a rock "})
    assert moved.status_code == 303 and moved.headers["Location"] == f"/item/{names[2]}"
    moved = client.post(f"/item/{names[2]}", data={**form, "decision": "reject", "reason": "blurred"})
    assert moved.headers["Location"] == f"/item/{names[0]}"
    assert "2 of 3</b> reviewed" in client.get(f"/item/{names[0]}").get_data(as_text=True)
    assert client.post(f"/item/{names[0]}", data={**form, "decision": "approve"}).headers["Location"] == "/done"
    again = client.post(f"/item/{names[0]}", data={**form, "decision": "reject"})  # a double click
    assert again.status_code == 303 and queue.decision(names[0]).decision == "approved"

    answered = client.get(f"/item/{names[1]}").get_data(as_text=True)
    assert 'id="review"' not in answered and "Sintel climbs a rock" in answered and "edited" in answered
    assert not done_page.is_set()
    with client.get("/done") as response:  # the server is told once the done page is sent
        assert "All 3 records are reviewed" in response.get_data(as_text=True)
    assert done_page.is_set()
    assert queue.counts() == {"approved": 1, "edited": 1, "rejected": 1}

    output = json.loads((tmp_path / "loops" / names[2] / "output.json").read_text())
    assert output["humanAnswers"][0]["answerContent"] == {"approve": {"on": False}, "edit": {"on": False},
                                                          "reject": {"on": True}, "caption": rows[2]["alt_text"],
                                                          "reason": "blurred"}
    assert output["inputContent"]["itemId"] == rows[2]["crop_id"]
    statuses = {n: loops.status(n) for n in names}
    decisions = decisions_from_loops(rows, state, statuses, {n: loops.output(n) for n in names})
    assert [d.decision for d in decisions] == ["approved", "edited", "rejected"]
    assert decisions[1].caption == "Sintel climbs a rock" and "blurred" in decisions[2].reasons[0]


def test_local_review_page_serves_until_every_record_is_answered(tmp_path, capsys):
    rows, _, loops, names = _started_loops(tmp_path, 2)
    ready = threading.Event()
    urls: list[str] = []

    def on_ready(url: str) -> None:
        urls.append(url)
        ready.set()

    server = threading.Thread(target=serve_local_review, args=(loops, names, LocalImageProbe(tmp_path).resolve),
                              kwargs={"port": 0, "timeout_s": 30, "on_ready": on_ready})
    server.start()
    assert ready.wait(10)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", urls[0])
    for i, name in enumerate(names):
        with urllib.request.urlopen(urls[0], timeout=5) as response:  # / redirects to the next record
            page = response.read().decode()
            assert response.url.endswith(f"/item/{name}")
        body = urllib.parse.urlencode({"token": _token(page), "decision": "approve", "caption": rows[i]["alt_text"],
                                       "reason": ""}).encode()
        with urllib.request.urlopen(urllib.request.Request(response.url, data=body), timeout=5) as answered:
            last = answered.read().decode()
    assert "All 2 records are reviewed" in last  # the done page is sent before the server stops
    server.join(10)
    assert not server.is_alive()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(urls[0], timeout=2)
    assert f"Review page: {urls[0]}" in capsys.readouterr().out
    assert all(loops.status(n).status == "Completed" for n in names)
    serve_local_review(loops, names, str, port=0, timeout_s=0.1)  # nothing pending: returns at once


def test_local_review_page_refuses_non_loopback_busy_ports_and_times_out(tmp_path):
    import socket

    loops = LocalHumanLoops(tmp_path)
    loops.start("storyboard-aaaaaaaaaaaa-00000", json.dumps({"taskObject": "x.jpg", "caption": "c", "itemId": "x"}))
    with pytest.raises(InputError, match="loopback"):
        serve_local_review(loops, ["storyboard-aaaaaaaaaaaa-00000"], str, host="0.0.0.0")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(InputError, match="review.local_review_port"):
            serve_local_review(loops, ["storyboard-aaaaaaaaaaaa-00000"], str, port=busy.getsockname()[1])
    with pytest.raises(InputError, match="timed out"):
        serve_local_review(loops, ["storyboard-aaaaaaaaaaaa-00000"], str, port=0, timeout_s=0.3)
    loops.stop("storyboard-aaaaaaaaaaaa-00000")
    assert loops.status("storyboard-aaaaaaaaaaaa-00000").status == "Stopped"
    with pytest.raises(InputError, match="stopped"):
        loops.answer("storyboard-aaaaaaaaaaaa-00000", {"approve": {"on": True}})


def test_local_a2i_mode_reviews_in_the_browser(tmp_path):
    import socket
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = parse_config({"characters": [{"name": "bunny"}, {"name": "sintel"}],
                           "review": {"local_review_page": True, "local_review_port": port,
                                      "local_review_timeout_s": 60}})
    manifest = _manifest(tmp_path / "data", 6)
    _references(tmp_path / "data" / "references")
    result: dict = {}

    def run() -> None:
        try:
            result["out"] = CALLBACK_HANDLERS["HumanReview"]({"ManifestUri": str(manifest), "ReviewMode": "a2i"},
                                                             tmp_path / "run", config)
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            result["error"] = err

    worker = threading.Thread(target=run)
    worker.start()
    url = f"http://127.0.0.1:{port}/"
    for i in range(6):
        for _ in range(100):
            try:
                response = urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                time.sleep(0.05)
        page = response.read().decode()
        assert "/reference/" in page  # the dataset's references/ folder is shown
        caption = re.search(r"<textarea[^>]*>([^<]*)</textarea>", page).group(1)
        decision = "reject" if i == 0 else "approve"
        body = urllib.parse.urlencode({"token": _token(page), "decision": decision, "caption": caption}).encode()
        urllib.request.urlopen(urllib.request.Request(response.url, data=body), timeout=5).read()
    worker.join(30)
    assert "error" not in result, result.get("error")
    assert (result["out"]["ApprovedCount"], result["out"]["RejectedCount"]) == ("5", "1")
    assert len((tmp_path / "run" / "train.jsonl").read_text().splitlines()) == 5
    reviewed = [json.loads(line) for line in (tmp_path / "run" / "reviewed_manifest.jsonl").read_text().splitlines()]
    assert reviewed[0]["review"]["decision"] == "rejected" and reviewed[1]["review"]["reviewer"] == "a2i:local-reviewer"


def test_local_review_keeps_answers_across_attempts_and_asks_only_for_the_rest(tmp_path, monkeypatch):
    config = parse_config({"characters": [{"name": "bunny"}, {"name": "sintel"}],
                           "review": {"local_review_page": True, "local_review_port": 0,
                                      "local_review_timeout_s": 0.5}})
    manifest = _manifest(tmp_path / "data", 6)
    args = {"ManifestUri": str(manifest), "ReviewMode": "a2i"}
    with pytest.raises(InputError, match="timed out .* 6 records unanswered"):
        CALLBACK_HANDLERS["HumanReview"](args, tmp_path / "run", config)
    loops = LocalHumanLoops(tmp_path / "run" / "human_loops")
    names = sorted(p.name for p in loops.folder.iterdir())
    for name in names[:5]:  # answered during the first attempt
        loops.answer(name, {"approve": {"on": True}, "caption": loops.input_content(name)["caption"]})
    config = config.model_copy(update={"review": config.review.model_copy(update={"local_review_timeout_s": 30})})
    urls: list[str] = []
    result: dict = {}
    import steps.local_review as local_review

    real_serve = local_review.serve_local_review
    monkeypatch.setattr(local_review, "serve_local_review",
                        lambda *a, **k: real_serve(*a, **{**k, "on_ready": urls.append}))

    def run() -> None:
        try:
            result["out"] = CALLBACK_HANDLERS["HumanReview"](args, tmp_path / "run", config)
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            result["error"] = err

    worker = threading.Thread(target=run)
    worker.start()
    for _ in range(200):
        if urls or not worker.is_alive():
            break
        threading.Event().wait(0.05)
    with urllib.request.urlopen(urls[0], timeout=5) as response:  # only the unanswered record is left
        page = response.read().decode()
    assert "5 of 6</b> reviewed" in page and response.url.endswith(f"/item/{names[5]}")
    body = urllib.parse.urlencode({"token": _token(page), "decision": "reject", "caption": ""}).encode()
    urllib.request.urlopen(urllib.request.Request(response.url, data=body), timeout=5).read()
    worker.join(30)
    assert "error" not in result, result.get("error")
    assert (result["out"]["ApprovedCount"], result["out"]["RejectedCount"]) == ("5", "1")


def test_review_page_option_of_run_local():
    from pipeline.commands.local import with_review_page

    config = parse_config({"characters": [{"name": "bunny"}]})
    assert config.review.local_review_page is False
    changed, overrides = with_review_page(config, {"LoraRank": "8"})
    assert changed.review.local_review_page is True and config.review.local_review_page is False
    assert overrides == {"LoraRank": "8", "ReviewMode": "a2i"}
    assert with_review_page(config, {"ReviewMode": "A2I"})[1]["ReviewMode"] == "a2i"
    with pytest.raises(InputError, match="--review-page .* ReviewMode=auto"):
        with_review_page(config, {"ReviewMode": "auto"})
