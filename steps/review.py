"""Step 3, HumanReview: approve, edit or reject each crop and caption before fine-tuning.

Two ways to decide, behind one result (:class:`ReviewDecision` per record):

- the automatic policy (:class:`steps.auto_review.AutoReviewPolicy`, ``ReviewMode=auto``): approves records
  that pass the Nova Canvas checks and the configured rules, and records why for each record;
- human loops (``ReviewMode=a2i``): one Amazon A2I human loop per record
  (:class:`steps.human_loops.A2IHumanLoops`; names, inputs and answers in :mod:`steps.a2i_loops`, the task
  UI and flow definition in :mod:`steps.a2i_resources`, the running review in :mod:`steps.review_state`),
  whose ``output.json`` answers become decisions (:func:`steps.a2i_loops.decision_from_output`). Offline,
  the same loop protocol is served by :class:`steps.local_review.LocalHumanLoops` and a review page on
  127.0.0.1 (:func:`steps.local_review.serve_local_review`).

This module holds what both share: the labelling manifest's records, the decision, and the result.

Inputs: the labelling manifest (``manifest.jsonl``: ``{"image_ref", "alt_text"}`` plus metadata such as
``crop_id``, ``character``, ``needs_review``; metadata may also sit under a ``metadata`` object).
Outputs (:class:`ReviewResult`): the reviewed labelling manifest (every record, with a ``review``
object: decision, reasons, reviewer, original caption) and the reviewed Bedrock training manifest
(``train.jsonl``: exactly ``{"image-ref", "caption"}`` for approved and edited records).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core import io as sio
from core.config import NOVA_CANVAS_MAX_RECORDS, NOVA_CANVAS_MIN_RECORDS
from core.errors import InputError, TooFewRecordsError

Decision = Literal["approved", "edited", "rejected"]
DECISIONS: tuple[str, ...] = ("approved", "edited", "rejected")


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
