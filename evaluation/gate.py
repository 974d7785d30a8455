"""The quality gate's decision (DESIGN.md §7): every configured criterion measured and met, or why not.

The Evaluate step writes the decision as ``gate`` in ``evaluation.json``; the Condition step (CheckQuality) reads
only ``gate.status`` and the Fail step states ``gate.summary``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GATE_STATUSES = ("passed", "failed", "inconclusive")


def _criterion(name: str, label: str, value: float | None, threshold: float, comparison: str, fmt: str,
               missing: str, detail: str = "", per_character: Mapping[str, float] | None = None) -> dict[str, Any]:
    limit = "minimum" if comparison == ">=" else "maximum"
    if value is None:
        verdict, sentence = "not_measured", f"{label} was not measured ({missing}; {limit} {threshold:{fmt}})"
    else:
        met = value >= threshold if comparison == ">=" else value <= threshold
        verdict = "met" if met else "not_met"
        sentence = (f"{label} {value:{fmt}}{detail} is {'within' if met else 'beyond'} the {limit} {threshold:{fmt}}"
                    if comparison == "<=" else
                    f"{label} {value:{fmt}}{detail} is {'at or above' if met else 'below'} the {limit} "
                    f"{threshold:{fmt}}")
    return {"name": name, "label": label, "value": None if value is None else round(float(value), 6),
            "threshold": float(threshold), "comparison": comparison, "verdict": verdict, "sentence": sentence,
            "per_character": None if per_character is None else {k: round(float(v), 6)
                                                                 for k, v in sorted(per_character.items())}}


def decide_gate(*, character_similarity: float | None, improvement: float | None, base_similarity: float | None,
                near_copy_rate: float | None, min_character_similarity: float, min_improvement: float,
                max_near_copy_rate: float, near_copy_rate_per_character: Mapping[str, float] | None = None,
                calibration_auc: float | None = None, calibration_auc_per_character: Mapping[str, float] | None = None,
                min_calibration_auc: float | None = None) -> dict[str, Any]:
    """The quality gate's decision (DESIGN.md §7): every configured criterion measured and met, or not.

    Criteria: the fine-tuned model's character similarity (macro mean cosine, [-1, 1]) at least
    ``min_character_similarity``; its improvement over the base model (fine-tuned minus base, [-2, 2]) at least
    ``min_improvement``; the near-copy rate (share of fine-tuned images whose highest similarity to a training
    crop reaches ``memorisation_threshold``, [0, 1]; DreamBooth's concern that a fine-tune reproduces its
    training images) at most ``max_near_copy_rate``. A figure given as ``None`` was not measured.

    With ``min_calibration_auc`` given (the pipeline's ``evaluation.min_calibration_auc``, default 0.9), the
    encoder's calibration is a criterion too: ``calibration_auc``, the lowest per-character one-vs-rest AUC of
    held-out real crops against the other characters and backgrounds (:mod:`evaluation.calibration`), at least
    ``min_calibration_auc``. Below it the encoder cannot tell the characters apart, so the other figures can
    neither pass nor fail a model: the status is ``inconclusive`` whatever they say.

    Returns:
        The ``gate`` block of ``evaluation.json``: ``status`` (``failed`` when a measured criterion is not met,
        else ``inconclusive`` when one was not measured, else ``passed``), ``passed`` (status is ``passed``),
        ``summary`` (one sentence with every figure and threshold, always a string: the Fail step's message),
        ``reasons`` (a plain sentence per criterion not met or not measured), ``criteria`` (each with
        ``value``, ``threshold``, ``comparison`` and ``verdict``: ``met`` | ``not_met`` | ``not_measured``) and
        the thresholds (``min_calibration_auc`` ``None`` when calibration is no criterion).
    """
    base = f" (base model {base_similarity:.3f})" if base_similarity is not None else ""
    criteria = [
        _criterion("character_similarity", "fine-tuned character similarity", character_similarity,
                   min_character_similarity, ">=", ".3f", "no fine-tuned image was scored"),
        _criterion("improvement_over_base", "improvement over the base model", improvement, min_improvement, ">=",
                   "+.3f", "no base model images: give --baseline-images (pipeline: DIR/base/<character>/ or the "
                   "base model generated in the Evaluate step)", detail=base),
        _criterion("near_copy_rate", "near-copy rate of the training crops", near_copy_rate, max_near_copy_rate,
                   "<=", ".3f", "no training crops: give --training-crops (pipeline: the dataset's crops.jsonl)",
                   per_character=near_copy_rate_per_character),
    ]
    if min_calibration_auc is not None:
        criteria.append(_criterion(
            "calibration_auc", "lowest one-vs-rest calibration AUC of the encoder", calibration_auc,
            min_calibration_auc, ">=", ".3f", "no held-out real crops of every character with other characters' "
            "crops or background windows: give --calibration-crops DIR/<character>/ and DIR/_background/ (pipeline: "
            "the dataset's training crops)", per_character=calibration_auc_per_character))
    verdicts = [c["verdict"] for c in criteria]
    unreliable = bool(criteria[-1]["name"] == "calibration_auc" and criteria[-1]["verdict"] == "not_met")
    if unreliable:
        criteria[-1]["sentence"] += (" (the encoder cannot separate the characters, so the similarity figures "
                                     "decide nothing: use Titan, Nova Multimodal Embeddings or an ONNX encoder)")
        status = "inconclusive"
    else:
        status = "failed" if "not_met" in verdicts else ("inconclusive" if "not_measured" in verdicts else "passed")
    reasons = [c["sentence"] for c in criteria if c["verdict"] != "met"]
    lead = {"passed": "Quality gate passed", "failed": "Quality gate failed",
            "inconclusive": "Quality gate inconclusive (" + ("the encoder cannot tell the characters apart"
                                                             if unreliable else "a figure it needs is missing")
                            + ", so nothing is registered)"}
    summary = f"{lead[status]}: " + "; ".join(c["sentence"] for c in criteria) + "."
    return {"status": status, "passed": status == "passed", "summary": summary, "reasons": reasons,
            "criteria": criteria, "min_character_similarity": float(min_character_similarity),
            "min_improvement": float(min_improvement), "max_near_copy_rate": float(max_near_copy_rate),
            "min_calibration_auc": None if min_calibration_auc is None else float(min_calibration_auc)}
