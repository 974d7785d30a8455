"""Step 3, HumanReview: approve, edit or reject each crop and caption before fine-tuning.

Two ways to decide, behind one result (:class:`ReviewDecision` per record):

- the automatic policy (:class:`AutoReviewPolicy`, ``ReviewMode=auto``): approves records that pass the
  Nova Canvas checks and the configured rules, and records why for each record;
- human loops (``ReviewMode=a2i``): one Amazon A2I human loop per record (:class:`A2IHumanLoops`),
  whose ``output.json`` answers become decisions (:func:`decision_from_output`). Offline, the same
  loop protocol is served by :class:`steps.local_review.LocalHumanLoops` and a review page on 127.0.0.1
  (:func:`steps.local_review.serve_local_review`).

Inputs: the labelling manifest (``manifest.jsonl``: ``{"image_ref", "alt_text"}`` plus metadata such as
``crop_id``, ``character``, ``needs_review``; metadata may also sit under a ``metadata`` object).
Outputs (:class:`ReviewResult`): the reviewed labelling manifest (every record, with a ``review``
object: decision, reasons, reviewer, original caption) and the reviewed Bedrock training manifest
(``train.jsonl``: exactly ``{"image-ref", "caption"}`` for approved and edited records).

A2I facts (DESIGN §5; SageMaker A2I API reference): ``HumanLoopName`` at most 63 characters matching
``^[a-z0-9](-*[a-z0-9])*$``, unique in the account and Region; ``InputContent`` at most 3 MiB;
``output.json`` holds ``humanAnswers[].answerContent`` and echoes ``inputContent``; loop statuses
InProgress, Completed, Failed, Stopped, Stopping.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from core import io as sio
from core.config import NOVA_CANVAS_MAX_RECORDS, NOVA_CANVAS_MIN_RECORDS
from core.errors import InputError, TooFewRecordsError
from core.mlops_config import AutoReviewPolicyConfig, ReviewConfig
from steps.bedrock_validation import (
    ImageProbe,
    caption_problems,
    image_problems,
    image_ref_problems,
)

log = logging.getLogger(__name__)

Decision = Literal["approved", "edited", "rejected"]
DECISIONS: tuple[str, ...] = ("approved", "edited", "rejected")
A2I_MAX_INPUT_BYTES = 3 * 1024 * 1024  # StartHumanLoop InputContent (SageMaker A2I API reference)
LOOP_NAME_MAX = 63
LOOP_NAME_RE = re.compile(r"^(?P<prefix>[a-z0-9](?:-*[a-z0-9])*)-(?P<key>[0-9a-f]{12})-(?P<index>\d{5})$")
TERMINAL_LOOP_STATUSES = ("Completed", "Failed", "Stopped")


# -- records --------------------------------------------------------------------------------------------


def meta(row: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """A metadata field of a labelling-manifest row: top level first, then under ``metadata``."""
    if key in row:
        return row[key]
    nested = row.get("metadata")
    if isinstance(nested, Mapping) and key in nested:
        return nested[key]
    return default


def item_id_of(row: Mapping[str, Any], index: int) -> str:
    """The record's id: its ``crop_id`` (top level or metadata), else ``item-<index>``."""
    value = meta(row, "crop_id")
    return str(value) if value not in (None, "") else f"item-{index:05d}"


def check_labelling_rows(rows: Sequence[Mapping[str, Any]], source: str = "labelling manifest") -> None:
    """Raise :class:`InputError` unless every row has string ``image_ref`` and ``alt_text``.

    The message names the first 20 bad lines; a Bedrock training manifest given by mistake is named.
    """
    if not rows:
        raise InputError(f"{source} is empty: CaptionImages wrote no records (check its crops and captions)")
    bad = []
    for lineno, row in enumerate(rows, 1):
        if "image-ref" in row and "image_ref" not in row:
            raise InputError(f"{source} line {lineno} is a Bedrock training manifest line (image-ref/caption); "
                             f"ManifestUri must be the labelling manifest (image_ref/alt_text)")
        for key in ("image_ref", "alt_text"):
            if not isinstance(row.get(key), str):
                bad.append(f"line {lineno}: {key!r} is missing or not a string")
    if bad:
        shown = "\n  - ".join(bad[:20])
        raise InputError(f"{source} has {len(bad)} bad lines:\n  - {shown}")


# -- decisions ------------------------------------------------------------------------------------------


@dataclass
class ReviewDecision:
    """The verdict on one record.

    Attributes:
        item_id: the record's id (:func:`item_id_of`).
        decision: ``approved`` (unchanged), ``edited`` (caption changed) or ``rejected``.
        caption: the final caption (the edited one for ``edited``).
        original_caption: the caption the record arrived with.
        reasons: why, one short sentence each (every decision has at least one).
        reviewer: ``auto-policy`` or ``a2i:<worker ids>`` (the local review page answers as
            ``a2i:local-reviewer``).
        human_loop: the A2I human loop name, where there was one.
    """

    item_id: str
    decision: Decision
    caption: str
    original_caption: str
    reasons: list[str] = field(default_factory=list)
    reviewer: str = "auto-policy"
    human_loop: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``review`` object written into the reviewed labelling manifest."""
        out = {"decision": self.decision, "reasons": list(self.reasons), "reviewer": self.reviewer}
        if self.decision == "edited":
            out["original_caption"] = self.original_caption
        if self.human_loop:
            out["human_loop"] = self.human_loop
        return out


def character_aliases(characters: Iterable[Any]) -> dict[str, list[str]]:
    """``{name: [name, caption name]}`` from ``StoryboardConfig.characters`` (objects with ``name`` and
    ``caption_name``), used to check that a caption names its character."""
    out: dict[str, list[str]] = {}
    for c in characters:
        names = [c.name, getattr(c, "caption_name", c.name)]
        out[c.name] = list(dict.fromkeys(n for n in names if n))
    return out


class AutoReviewPolicy:
    """The automatic reviewer: approve what passes the checks, reject with reasons otherwise.

    Checks, in order (each failure is a reason; any failure rejects):
    image reference form (``s3://`` key or file name characters, extension); the caption limits
    (3 to 1,024 characters); the image itself against the Nova Canvas limits when ``probe`` is given
    and ``rules.check_images``; the caption names the record's character
    (``rules.require_character_name``); the captioner's ``needs_review`` flag
    (``rules.reject_needs_review``); an ``image_ref`` already kept by an earlier record
    (``rules.reject_duplicate_images``).
    With ``rules.normalise_whitespace`` a caption whose whitespace was collapsed counts as edited.
    """

    reviewer = "auto-policy"

    def __init__(self, rules: AutoReviewPolicyConfig | None = None, probe: ImageProbe | None = None,
                 aliases: Mapping[str, Sequence[str]] | None = None) -> None:
        self.rules = rules or AutoReviewPolicyConfig()
        self.probe = probe
        self.aliases = dict(aliases or {})

    def review(self, rows: Sequence[Mapping[str, Any]]) -> list[ReviewDecision]:
        """One decision per row, same order."""
        seen: dict[str, str] = {}
        decisions = []
        for index, row in enumerate(rows):
            decision = self.decide(row, index)
            ref = row.get("image_ref")
            if self.rules.reject_duplicate_images and isinstance(ref, str):
                if ref in seen and decision.decision != "rejected":
                    decision = ReviewDecision(decision.item_id, "rejected", decision.original_caption,
                                              decision.original_caption,
                                              [f"duplicate: the same image_ref as {seen[ref]}"], self.reviewer)
                if decision.decision != "rejected":
                    seen.setdefault(ref, decision.item_id)
            decisions.append(decision)
        return decisions

    def decide(self, row: Mapping[str, Any], index: int) -> ReviewDecision:
        """The decision for one row (see the class docstring for the checks)."""
        item_id = item_id_of(row, index)
        original = row.get("alt_text") if isinstance(row.get("alt_text"), str) else ""
        caption = " ".join(original.split()) if self.rules.normalise_whitespace else original
        problems: list[str] = []
        ref = row.get("image_ref")
        problems += image_ref_problems(ref)
        problems += caption_problems(caption)
        if self.probe is not None and self.rules.check_images and isinstance(ref, str) and not problems:
            try:
                problems += [f"image: {p}" for p in image_problems(self.probe.probe(ref))]
            except InputError as err:
                problems.append(f"image: {err}")
        character = meta(row, "character")
        if self.rules.require_character_name and isinstance(character, str) and character and caption:
            names = self.aliases.get(character) or [character]
            if not any(n.lower() in caption.lower() for n in names):
                problems.append(f"caption does not name the character ({' or '.join(names)})")
        if meta(row, "needs_review") is True and self.rules.reject_needs_review:
            note = meta(row, "note") or meta(row, "caption_note")
            problems.append("flagged needs_review by the captioner" + (f": {note}" if note else ""))
        if problems:
            return ReviewDecision(item_id, "rejected", original, original, problems, self.reviewer)
        reasons = ["passes the Nova Canvas image and caption checks"]
        if meta(row, "needs_review") is True:
            reasons.append("flagged needs_review, approved because review.auto.reject_needs_review is false")
        if caption != original:
            return ReviewDecision(item_id, "edited", caption, original, reasons + ["whitespace normalised"],
                                  self.reviewer)
        return ReviewDecision(item_id, "approved", caption, original, reasons, self.reviewer)


# -- results --------------------------------------------------------------------------------------------


@dataclass
class ReviewResult:
    """Reviewed manifests and counts.

    Attributes:
        reviewed_rows: every input row, caption updated for edits, with a ``review`` object.
        training_rows: ``{"image-ref", "caption"}`` for approved and edited rows, input order.
        approved, edited, rejected: counts (they sum to ``len(reviewed_rows)``).
    """

    reviewed_rows: list[dict[str, Any]]
    training_rows: list[dict[str, str]]
    approved: int
    edited: int
    rejected: int

    def outputs(self, reviewed_manifest_uri: str) -> dict[str, str]:
        """The HumanReview step's output parameters (flat strings)."""
        return {
            "ReviewedManifestUri": reviewed_manifest_uri,
            "ApprovedCount": str(self.approved),
            "EditedCount": str(self.edited),
            "RejectedCount": str(self.rejected),
        }

    def report(self, mode: str) -> dict[str, Any]:
        """``review_report.json``: counts and the reasons for every rejection, by reason."""
        reasons = Counter(r for row in self.reviewed_rows if row["review"]["decision"] == "rejected"
                          for r in row["review"]["reasons"])
        return {
            "mode": mode,
            "records": len(self.reviewed_rows),
            "approved": self.approved,
            "edited": self.edited,
            "rejected": self.rejected,
            "training_records": len(self.training_rows),
            "rejection_reasons": dict(reasons.most_common()),
        }


def apply_decisions(rows: Sequence[Mapping[str, Any]], decisions: Sequence[ReviewDecision]) -> ReviewResult:
    """Merge decisions into the rows (same order) and build the training rows.

    Raises:
        ValueError: the two sequences differ in length.
    """
    if len(rows) != len(decisions):
        raise ValueError(f"{len(rows)} rows but {len(decisions)} decisions")
    reviewed, training = [], []
    counts = Counter()
    for row, decision in zip(rows, decisions, strict=True):
        out = dict(row)
        out["alt_text"] = decision.caption
        out["review"] = decision.to_json()
        reviewed.append(out)
        counts[decision.decision] += 1
        if decision.decision != "rejected":
            training.append({"image-ref": str(row["image_ref"]), "caption": decision.caption})
    return ReviewResult(reviewed, training, counts["approved"], counts["edited"], counts["rejected"])


def check_training_count(result: ReviewResult) -> None:
    """Raise when the reviewed training set cannot be fine-tuned on (Nova Canvas: 5 to 10,000 records).

    Raises:
        TooFewRecordsError: fewer than 5 approved or edited records; the message gives the counts and
            the commonest rejection reasons.
        InputError: more than 10,000.
    """
    n = len(result.training_rows)
    if n < NOVA_CANVAS_MIN_RECORDS:
        top = "; ".join(f"{k} ({v})" for k, v in list(result.report("")["rejection_reasons"].items())[:3])
        raise TooFewRecordsError(
            f"the review kept {n} records ({result.approved} approved, {result.edited} edited, {result.rejected} "
            f"rejected); Nova Canvas fine-tuning needs at least {NOVA_CANVAS_MIN_RECORDS}. Commonest rejection "
            f"reasons: {top or 'none'}")
    if n > NOVA_CANVAS_MAX_RECORDS:
        raise InputError(f"the review kept {n} records; Nova Canvas fine-tuning takes at most "
                         f"{NOVA_CANVAS_MAX_RECORDS} (raise dedup.threshold or sample fewer frames)")


def write_review_outputs(folder: str | Path, result: ReviewResult, mode: str) -> dict[str, Path]:
    """Write ``reviewed_manifest.jsonl``, ``train.jsonl`` and ``review_report.json`` atomically.

    Returns:
        ``{"reviewed_manifest", "train", "report"}`` paths.
    """
    folder = Path(folder)
    paths = {"reviewed_manifest": folder / "reviewed_manifest.jsonl", "train": folder / "train.jsonl",
             "report": folder / "review_report.json"}
    sio.write_jsonl(paths["reviewed_manifest"], result.reviewed_rows)
    sio.write_jsonl(paths["train"], result.training_rows)
    sio.write_json(paths["report"], result.report(mode))
    return paths


# -- human loops: names, inputs, outputs ----------------------------------------------------------------


def execution_key(execution_arn: str, callback_token: str) -> str:
    """12 hex characters identifying one attempt of the review step (execution ARN + callback token).

    A re-delivered SQS message has the same token, so its loops get the same names (idempotent); a
    retried step gets a new token and new loops.
    """
    return hashlib.sha256(f"{execution_arn}|{callback_token}".encode()).hexdigest()[:12]


def loop_name(prefix: str, key: str, index: int) -> str:
    """``<prefix>-<key>-<index:05d>``: lower case, at most 63 characters, A2I's name pattern.

    Raises:
        InputError: ``index`` is outside 0..99,999 or the prefix has no usable characters.
    """
    if not 0 <= index <= 99_999:
        raise InputError(f"human loop index {index} is outside 0..99999")
    clean = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", prefix.lower())).strip("-")[:LOOP_NAME_MAX - 19]
    clean = clean.strip("-")
    if not clean:
        raise InputError(f"human loop prefix {prefix!r} has no letters or digits")
    return f"{clean}-{key}-{index:05d}"


def parse_loop_name(name: str) -> tuple[str, int] | None:
    """``(execution key, index)`` of a loop name made by :func:`loop_name`, else ``None``."""
    match = LOOP_NAME_RE.match(name or "")
    return (match["key"], int(match["index"])) if match else None


def build_loop_input(row: Mapping[str, Any], item_id: str, index: int, callback_token: str,
                     execution_arn: str, character_display: str | None = None) -> str:
    """The ``HumanLoopInput.InputContent`` JSON for one record.

    It carries what the template shows (``taskObject``, ``caption``, ``character``, ``itemId``) and what
    completion needs back from ``output.json``'s echoed ``inputContent`` (``index``, ``callbackToken``,
    ``pipelineExecutionArn``).

    Raises:
        InputError: the JSON exceeds A2I's 3 MiB input limit.
    """
    character = meta(row, "character") or ""
    content = {
        "taskObject": row["image_ref"],
        "caption": row["alt_text"],
        "character": character_display or character,
        "characterName": character,
        "itemId": item_id,
        "index": index,
        "callbackToken": callback_token,
        "pipelineExecutionArn": execution_arn,
    }
    text = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
    if len(text.encode("utf-8")) > A2I_MAX_INPUT_BYTES:
        raise InputError(f"human loop input for {item_id} is {len(text.encode('utf-8'))} bytes; A2I accepts at most "
                         f"{A2I_MAX_INPUT_BYTES} (shorten its caption or metadata)")
    return text


def _choice(answer: Mapping[str, Any]) -> str | None:
    """approve / edit / reject from an answerContent (radio buttons ``{"on": bool}`` or ``decision``)."""
    picked = []
    for name in ("approve", "edit", "reject"):
        value = answer.get(name)
        on = value.get("on") if isinstance(value, Mapping) else value
        if on is True or (isinstance(on, str) and on.lower() in ("true", "on")):
            picked.append(name)
    if len(picked) == 1:
        return picked[0]
    decision = answer.get("decision")
    if isinstance(decision, Mapping):
        return _choice(decision)
    if isinstance(decision, str) and decision.lower() in ("approve", "approved", "edit", "edited", "reject",
                                                          "rejected"):
        return {"approved": "approve", "edited": "edit", "rejected": "reject"}.get(decision.lower(),
                                                                                   decision.lower())
    return None


def _answer_decision(answer: Mapping[str, Any], original: str) -> tuple[Decision, str, list[str]]:
    choice = _choice(answer)
    caption = answer.get("caption")
    caption = " ".join(caption.split()) if isinstance(caption, str) and caption.strip() else original
    reason = str(answer.get("reason") or "").strip()
    if choice == "reject":
        return "rejected", original, [f"rejected by the reviewer: {reason}" if reason else "rejected by the reviewer"]
    if choice is None:
        return "rejected", original, ["the reviewer chose no decision"]
    problems = caption_problems(caption)
    if problems:
        return "rejected", original, [f"the reviewer's caption is unusable: {problems[0]}"]
    if caption != " ".join(original.split()):
        return "edited", caption, ["caption edited by the reviewer"]
    return "approved", original, ["approved by the reviewer"]


def decision_from_output(output: Mapping[str, Any], item_id: str, original_caption: str,
                         human_loop: str | None = None) -> ReviewDecision:
    """Turn an A2I ``output.json`` into a decision.

    Each ``humanAnswers[].answerContent`` is read as approve / edit / reject plus the caption. With
    several workers (``TaskCount`` > 1) the most common decision wins and a tie rejects (a training
    record needs agreement); the caption comes from the first worker with the winning decision.
    """
    answers = [a for a in output.get("humanAnswers") or [] if isinstance(a, Mapping)]
    workers = [str(a.get("workerId")) for a in answers if a.get("workerId")]
    reviewer = "a2i:" + ",".join(workers) if workers else "a2i"
    if not answers:
        return ReviewDecision(item_id, "rejected", original_caption, original_caption,
                              ["the human loop returned no answer"], reviewer, human_loop)
    verdicts = [_answer_decision(a.get("answerContent") or {}, original_caption) for a in answers]
    votes = Counter(v[0] for v in verdicts)
    ranked = votes.most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return ReviewDecision(item_id, "rejected", original_caption, original_caption,
                              [f"reviewers disagreed ({dict(votes)})"], reviewer, human_loop)
    winner = ranked[0][0]
    first = next(v for v in verdicts if v[0] == winner)
    reasons = list(first[2]) + ([f"{votes[winner]} of {len(verdicts)} reviewers"] if len(verdicts) > 1 else [])
    return ReviewDecision(item_id, winner, first[1], original_caption, reasons, reviewer, human_loop)


def decision_for_unfinished_loop(item_id: str, original_caption: str, status: str, failure: str | None,
                                 human_loop: str) -> ReviewDecision:
    """A loop that ended Failed or Stopped: the record is rejected, with the loop's status as the reason."""
    why = f"human loop {status}" + (f": {failure}" if failure else "")
    return ReviewDecision(item_id, "rejected", original_caption, original_caption, [why], "a2i", human_loop)


# -- human loop services --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoopStatus:
    """A human loop's state: ``status`` (InProgress, Completed, Failed, Stopped, Stopping), where its
    ``output.json`` is (Completed only) and why it failed."""

    name: str
    status: str
    output_uri: str | None = None
    failure: str | None = None

    @property
    def terminal(self) -> bool:
        """Completed, Failed or Stopped."""
        return self.status in TERMINAL_LOOP_STATUSES


@runtime_checkable
class HumanLoops(Protocol):
    """Starts, stops and describes human loops of one flow definition."""

    def start(self, name: str, input_content: str) -> None:
        """Start loop ``name``; starting an existing loop again is not an error (idempotent)."""
        ...

    def stop(self, name: str) -> None:
        """Stop loop ``name``; a loop that is unknown or already ended is not an error."""
        ...

    def status(self, name: str) -> LoopStatus:
        """The loop's current :class:`LoopStatus`."""
        ...


class A2IHumanLoops:
    """Amazon A2I runtime (``sagemaker-a2i-runtime``) for one flow definition."""

    def __init__(self, a2i_client: Any, flow_definition_arn: str) -> None:
        self.a2i = a2i_client
        self.flow_definition_arn = flow_definition_arn

    def start(self, name: str, input_content: str) -> None:
        """``start_human_loop``; ``ConflictException`` (the name exists) means it was started already."""
        from botocore.exceptions import ClientError

        try:
            self.a2i.start_human_loop(HumanLoopName=name, FlowDefinitionArn=self.flow_definition_arn,
                                      HumanLoopInput={"InputContent": input_content})
        except ClientError as err:
            code = err.response["Error"].get("Code")
            message = err.response["Error"].get("Message", "")
            if code == "ConflictException" or "already exists" in message.lower():
                log.info("human loop %s already exists", name)
                return
            raise

    def stop(self, name: str) -> None:
        """``stop_human_loop``; a missing or finished loop is ignored."""
        from botocore.exceptions import ClientError

        try:
            self.a2i.stop_human_loop(HumanLoopName=name)
        except ClientError as err:
            if err.response["Error"].get("Code") in ("ResourceNotFoundException", "ValidationException",
                                                     "ConflictException"):
                log.info("human loop %s not stopped: %s", name, err.response["Error"].get("Message"))
                return
            raise

    def status(self, name: str) -> LoopStatus:
        """``describe_human_loop``."""
        out = self.a2i.describe_human_loop(HumanLoopName=name)
        return LoopStatus(name, out["HumanLoopStatus"], (out.get("HumanLoopOutput") or {}).get("OutputS3Uri"),
                          out.get("FailureReason"))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- A2I resources --------------------------------------------------------------------------------------


def ensure_human_task_ui(sagemaker: Any, name: str, template: str) -> str:
    """The worker task template's ARN, creating it if needed (``create_human_task_ui``).

    An existing UI of that name is reused as is (templates cannot be updated in place: give a new
    ``review.human_task_ui_name`` to change it).
    """
    from botocore.exceptions import ClientError

    try:
        return sagemaker.describe_human_task_ui(HumanTaskUiName=name)["HumanTaskUiArn"]
    except ClientError as err:
        if err.response["Error"].get("Code") not in ("ResourceNotFound", "ValidationException"):
            raise
    try:
        return sagemaker.create_human_task_ui(HumanTaskUiName=name, UiTemplate={"Content": template})["HumanTaskUiArn"]
    except ClientError as err:
        if err.response["Error"].get("Code") == "ResourceInUse":
            return sagemaker.describe_human_task_ui(HumanTaskUiName=name)["HumanTaskUiArn"]
        raise


def flow_definition_request(name: str, review: ReviewConfig, human_task_ui_arn: str, output_s3_uri: str) -> dict:
    """The ``create_flow_definition`` request: a custom task type, so no ``HumanLoopRequestSource``.

    Raises:
        InputError: ``review.workteam_arn`` or ``review.role_arn`` is not set.
    """
    missing = [k for k in ("workteam_arn", "role_arn") if not getattr(review, k)]
    if missing:
        raise InputError(f"ReviewMode a2i needs review.{' and review.'.join(missing)} in pipeline.yaml "
                         f"(or review.flow_definition_arn naming an existing flow definition)")
    return {
        "FlowDefinitionName": name,
        "HumanLoopConfig": {
            "WorkteamArn": review.workteam_arn,
            "HumanTaskUiArn": human_task_ui_arn,
            "TaskTitle": review.task_title,
            "TaskDescription": review.task_description,
            "TaskCount": review.task_count,
            "TaskAvailabilityLifetimeInSeconds": review.task_availability_s,
            "TaskTimeLimitInSeconds": review.task_time_limit_s,
            "TaskKeywords": ["image", "caption", "review"],
        },
        "OutputConfig": {"S3OutputPath": output_s3_uri},
        "RoleArn": review.role_arn,
    }


def ensure_flow_definition(sagemaker: Any, request: Mapping[str, Any], timeout_s: float | None = None) -> str:
    """The flow definition's ARN, creating it from ``request`` when none of that name exists, once it is Active
    (:func:`steps.a2i_flow.await_flow_definition_active`; loops must not start before).

    Raises:
        InputError: the flow definition is Failed (its FailureReason is quoted), Deleting, or not Active in time.
    """
    from botocore.exceptions import ClientError

    from steps.a2i_flow import ACTIVE_TIMEOUT_S, await_flow_definition_active

    name = request["FlowDefinitionName"]
    try:
        found = sagemaker.describe_flow_definition(FlowDefinitionName=name)
    except ClientError as err:
        if err.response["Error"].get("Code") not in ("ResourceNotFound", "ValidationException"):
            raise
        try:
            found = {"FlowDefinitionArn": sagemaker.create_flow_definition(**request)["FlowDefinitionArn"],
                     "FlowDefinitionStatus": "Initializing"}
        except ClientError as err2:
            if err2.response["Error"].get("Code") != "ResourceInUse":
                raise
            found = sagemaker.describe_flow_definition(FlowDefinitionName=name)
    if found.get("FlowDefinitionStatus") != "Active":
        found = await_flow_definition_active(sagemaker, name, ACTIVE_TIMEOUT_S if timeout_s is None else timeout_s)
    return found["FlowDefinitionArn"]


# -- review state (A2I) ---------------------------------------------------------------------------------


@dataclass
class ReviewState:
    """What completion needs to know about one running review, stored as ``state.json``.

    Attributes:
        execution_arn, callback_token: the pipeline execution and the step's callback token.
        key: :func:`execution_key` of the two; it is part of every loop name.
        manifest_uri: the labelling manifest reviewed.
        flow_definition_arn: where the loops run.
        output_uri: folder (URI) for the reviewed manifests.
        loops: ``[{"name", "item_id", "index"}]``, one per manifest record, in manifest order.
        created_at: ISO 8601 UTC time the review started.
    """

    execution_arn: str
    callback_token: str
    key: str
    manifest_uri: str
    flow_definition_arn: str
    output_uri: str
    loops: list[dict[str, Any]]
    created_at: str = field(default_factory=_now)

    def to_json(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReviewState:
        """Rebuild from :meth:`to_json`."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def age_hours(self, now: datetime | None = None) -> float:
        """Hours since the review started."""
        started = datetime.fromisoformat(self.created_at)
        return ((now or datetime.now(timezone.utc)) - started).total_seconds() / 3600.0


def decisions_from_loops(rows: Sequence[Mapping[str, Any]], state: ReviewState,
                         statuses: Mapping[str, LoopStatus],
                         outputs: Mapping[str, Mapping[str, Any]]) -> list[ReviewDecision]:
    """One decision per manifest row from the loops' final statuses and ``output.json`` documents.

    Args:
        rows: the labelling manifest, in the order the loops were started.
        state: the review state (loop per row).
        statuses: terminal :class:`LoopStatus` by loop name.
        outputs: parsed ``output.json`` by loop name (Completed loops).

    Raises:
        InputError: the manifest no longer matches the state (a different number of rows).
    """
    if len(rows) != len(state.loops):
        raise InputError(f"manifest {state.manifest_uri} has {len(rows)} records but the review started "
                         f"{len(state.loops)} human loops; it was changed during the review")
    decisions = []
    for row, loop in zip(rows, state.loops, strict=True):
        name, item_id = loop["name"], loop["item_id"]
        original = row.get("alt_text") or ""
        status = statuses.get(name)
        if status is not None and status.status == "Completed" and name in outputs:
            decisions.append(decision_from_output(outputs[name], item_id, original, name))
        else:
            decisions.append(decision_for_unfinished_loop(item_id, original, status.status if status else "missing",
                                                          status.failure if status else None, name))
    return decisions
