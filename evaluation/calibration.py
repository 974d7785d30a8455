"""Calibration on each run's own data: can the encoder tell each character from the rest of its film?

Every Evaluate run scores real images whose identity is known against the references (DESIGN.md §7):

- real crops of each character held out from the references: ``CALIBRATION/<character>/`` when given, else the
  training crops of the character that are not near-copies of one of its references (similarity below
  ``memorisation_threshold``: crops from a reference's own frame and its neighbours would measure recall of the
  references, not identity; the dataset records no reference frames, so same-shot crops that differ more
  remain and make the figure optimistic);
- the other characters' crops, and background windows (``CALIBRATION/_background/``: windows of frames with no
  character).

Per character c, the positives are c's real crops' similarity to c's references (the ceiling) and the negatives
the other characters' crops' and the background windows' similarity to c's references (the floor); the
one-vs-rest ROC AUC (scikit-learn's ``roc_auc_score``; 0.5: chance, 1: every real crop above every negative) says
how well the encoder separates them. Below ``min_calibration_auc`` (default 0.9) for any character, similarity
figures cannot tell a model that learnt the character from one that did not, so the gate is inconclusive
(:func:`evaluation.gate.decide_gate`) and the report says to use Titan, Nova Multimodal Embeddings or an ONNX
encoder. Without held-out crops, the references (each against the others, leave-one-out) give a band for the
report, but no AUC: the references define the character, so they cannot test the encoder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from evaluation import metrics as M
from evaluation.inputs import ImageItem

SOURCES = ("held-out real crops", "training crops apart from the references", "references (leave-one-out)")
ADVICE = ("the local descriptor cannot tell {names} from the other characters and backgrounds of the film "
          "(one-vs-rest AUC below {threshold:.2f}); use an encoder that measures identity: embeddings.backend: "
          "titan (Amazon Titan Multimodal Embeddings), Amazon Nova Multimodal Embeddings, or onnx (an image "
          "encoder such as DINOv2 exported to ONNX)")


def held_out_training(items: Sequence[ImageItem], embeddings: np.ndarray, ref_emb: Mapping[str, np.ndarray],
                      max_reference_similarity: float) -> tuple[list[ImageItem], np.ndarray, int]:
    """Training crops usable as held-out real crops: known character, not a near-copy of its references.

    Args:
        items: the training crops (``character`` ``None`` where unknown); ``embeddings`` their ``(N, D)`` unit rows.
        ref_emb: character -> ``(R, D)`` reference embeddings.
        max_reference_similarity: cosine at or above which a crop is a near-copy of a reference (the
            memorisation threshold, 0.95 by default; DESIGN §9's de-duplication anchors 0.9 to 0.95).

    Returns:
        ``(kept items, their embeddings, how many crops were left out as near-copies of a reference)``.
    """
    keep: list[int] = []
    excluded = 0
    for k, item in enumerate(items):
        if item.character is None or item.character not in ref_emb:
            continue
        if len(ref_emb[item.character]) and float(np.max(ref_emb[item.character] @ embeddings[k])) \
                >= max_reference_similarity:
            excluded += 1
            continue
        keep.append(k)
    dim = embeddings.shape[1] if embeddings.ndim == 2 else 0
    kept_emb = embeddings[keep] if keep else np.zeros((0, dim), dtype=np.float32)
    return [items[k] for k in keep], kept_emb, excluded


def _distribution(values: np.ndarray) -> dict[str, Any] | None:
    if not len(values):
        return None
    v = np.asarray(values, dtype=np.float64)
    return {"n": int(v.size), "mean": round(float(v.mean()), 6), "min": round(float(v.min()), 6),
            "max": round(float(v.max()), 6), "values": [round(float(x), 6) for x in v]}


def one_vs_rest_auc(positives: np.ndarray, negatives: np.ndarray) -> float | None:
    """ROC AUC of ``positives`` (label 1) against ``negatives`` (label 0), in [0, 1]; ``None`` when either is empty."""
    if not len(positives) or not len(negatives):
        return None
    from sklearn.metrics import roc_auc_score

    scores = np.concatenate([np.asarray(positives, dtype=np.float64), np.asarray(negatives, dtype=np.float64)])
    return float(roc_auc_score(np.r_[np.ones(len(positives)), np.zeros(len(negatives))], scores))


def calibrate(names: Sequence[str], ref_emb: Mapping[str, np.ndarray], items: Sequence[ImageItem] | None,
              embeddings: np.ndarray | None, source: str, summarise, min_auc: float,
              warnings: list[str]) -> dict[str, Any]:
    """The ``calibration`` block of ``evaluation.json``.

    Args:
        names: the reference characters; ``ref_emb`` their ``(R, D)`` embeddings.
        items, embeddings: held-out real crops (``character`` set) and background windows (``character``
            ``None``) with their ``(N, D)`` rows; ``None`` or empty: the references' leave-one-out band, no AUC.
        source: one of :data:`SOURCES` (for the held-out items).
        summarise: ``groups -> (summary dict, distribution) | None`` (the bootstrap summary of evaluate).
        min_auc: the gate's ``min_calibration_auc`` in [0.5, 1].
        warnings: appended to.

    Returns:
        ``{source, held_out, ceiling, floor, per_character: {c: {auc, real, other_characters, background}},
        auc (the lowest per-character AUC or null), min_auc, separable (null when no AUC), advice}``.
    """
    ceiling: dict[str, np.ndarray] = {}
    floor: dict[str, np.ndarray] = {}
    per: dict[str, dict[str, Any]] = {}
    held_out = items is not None and embeddings is not None and len(items) > 0
    if held_out:
        sim = M.reference_similarity(embeddings, {n: ref_emb[n] for n in names})  # columns in names order
        labels = [item.character for item in items]
        background = np.array([lab is None for lab in labels])
        for j, name in enumerate(names):
            own = np.array([lab == name for lab in labels])
            other = ~own & ~background
            real, rest, bg = sim[own, j], sim[other, j], sim[background, j]
            if own.any():
                ceiling[name] = real
            if (~own).any():
                floor[name] = sim[~own, j]
            auc = one_vs_rest_auc(real, np.concatenate([rest, bg]))
            per[name] = {"auc": None if auc is None else round(auc, 6), "real": _distribution(real),
                         "other_characters": _distribution(rest), "background": _distribution(bg)}
        missing = [n for n in names if per[n]["auc"] is None]
        if missing:
            warnings.append(f"calibration ({source}): no one-vs-rest AUC for {missing} (it needs real crops of the "
                            "character and of another character or background windows: give --calibration-crops "
                            "DIR/<character>/ and DIR/_background/)")
        if not background.any():
            warnings.append(f"calibration ({source}) has no background window: the AUC is measured against the "
                            "other characters only (give --calibration-crops DIR/_background/)")
    else:
        source = SOURCES[2]
        for name in names:
            refs = ref_emb[name]
            if len(refs) >= 2:
                ceiling[name] = M.leave_one_out_similarity(refs)
            others = [ref_emb[o] for o in names if o != name]
            if others:
                floor[name] = M.reference_similarity(np.concatenate(others), {name: refs})[:, 0]
            per[name] = {"auc": None, "real": _distribution(ceiling.get(name, np.zeros(0))),
                         "other_characters": _distribution(floor.get(name, np.zeros(0))), "background": None}
        warnings.append("calibration from the references only (no held-out crops): the encoder's separation of the "
                        "characters is not measured, so the gate is inconclusive; give --calibration-crops or "
                        "--training-crops")
    aucs = {n: e["auc"] for n, e in per.items() if e["auc"] is not None}
    low = min(aucs.values()) if aucs else None
    separable = None if low is None or len(aucs) < len(names) else bool(low >= min_auc)
    below = sorted(n for n, a in aucs.items() if a < min_auc)
    advice = ADVICE.format(names=below, threshold=min_auc) if below else None
    if advice:
        warnings.append(f"calibration: {advice}")
    out: dict[str, Any] = {"source": source, "held_out": held_out}
    for key, groups in (("ceiling", ceiling), ("floor", floor)):
        summary = summarise(groups)
        out[key] = summary[0] if summary else None
    out.update({"per_character": per, "auc": None if low is None else round(low, 6), "min_auc": float(min_auc),
                "separable": separable, "advice": advice})
    return out


def calibrated(mean: float | None, calibration: Mapping[str, Any]) -> float | None:
    """Where ``mean`` sits in the band: 0 at the floor's mean, 1 at the ceiling's; ``None`` without a band."""
    ceiling, floor = calibration.get("ceiling"), calibration.get("floor")
    if mean is None or not ceiling or not floor or ceiling["mean"] <= floor["mean"]:
        return None
    return round((mean - floor["mean"]) / (ceiling["mean"] - floor["mean"]), 6)
