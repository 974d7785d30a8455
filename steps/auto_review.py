"""The automatic reviewer of the HumanReview step (``ReviewMode=auto``): approve the records that pass the
Nova Canvas checks and the configured rules, reject the others with their reasons.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from core.errors import InputError
from core.mlops_config import AutoReviewPolicyConfig
from steps.bedrock_validation import caption_problems, image_problems, image_ref_problems
from steps.image_probes import ImageProbe
from steps.review import ReviewDecision, item_id_of, meta


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
