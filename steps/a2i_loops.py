"""Amazon A2I human loops of the review, one per record: their names, their input content, and the
decisions read from their ``output.json`` answers.

A2I facts (DESIGN §5; SageMaker A2I API reference): ``HumanLoopName`` at most 63 characters matching
``^[a-z0-9](-*[a-z0-9])*$``, unique in the account and Region; ``InputContent`` at most 3 MiB;
``output.json`` holds ``humanAnswers[].answerContent`` and echoes ``inputContent``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from core.errors import InputError
from steps.bedrock_validation import caption_problems
from steps.review import Decision, ReviewDecision, meta

A2I_MAX_INPUT_BYTES = 3 * 1024 * 1024  # StartHumanLoop InputContent (SageMaker A2I API reference)
LOOP_NAME_MAX = 63
LOOP_NAME_RE = re.compile(r"^(?P<prefix>[a-z0-9](?:-*[a-z0-9])*)-(?P<key>[0-9a-f]{12})-(?P<index>\d{5})$")


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
