"""Bootstrap summaries of the metrics: each metric's entry of ``evaluation.json``, base and fine-tuned.

Per model, a metric's values are grouped by character (:func:`_groups`; :func:`_keyed` groups the pairing
keys alike) and summarised with bootstrap intervals (:class:`_Stats`, flagging characters with too few
images). The difference between the models is a paired bootstrap where both have values with the same key
(:func:`_matched_pairs`: same file name, so the same character, prompt, seed and image index), else the
difference of two independent bootstraps (:func:`_metric_entry`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from evaluation import metrics as M

MODELS = ("finetuned", "base")

METRIC_INFO: dict[str, dict[str, Any]] = {
    "character_similarity": {
        "higher_is_better": True,
        "description": "Mean over a character's images of the mean cosine similarity to its references "
                       "(DreamBooth DINO / CLIP-I style); macro mean over characters.",
    },
    "identity_accuracy": {
        "higher_is_better": True,
        "description": "Share of images whose most similar character (mean similarity to references) is the "
                       "intended one; needs at least 2 reference characters.",
    },
    "prompt_fidelity": {
        "higher_is_better": True,
        "description": "Mean cosine similarity of each image to its prompt (CLIP-T style); only with an "
                       "encoder that embeds texts and images in one space (Titan).",
    },
    "diversity": {
        "higher_is_better": True,
        "description": "Mean pairwise cosine distance (1 - cos) among the images of one prompt (all its seeds); "
                       "mean over prompts, then over characters.",
    },
    "memorisation": {
        "higher_is_better": False,
        "description": "Mean over images of the highest cosine similarity to any training crop; a high value "
                       "means near-copies of the training data. near_copy_rate: share of images at or above the "
                       "threshold (the gate's memorisation criterion). Needs --training-crops.",
    },
}

def _groups(values: np.ndarray, characters: Sequence[str]) -> dict[str, np.ndarray]:
    out: dict[str, list[float]] = {}
    for value, character in zip(values, characters, strict=True):
        out.setdefault(character, []).append(float(value))
    return {k: np.asarray(v) for k, v in out.items()}


def _keyed(keys: Sequence[Any], characters: Sequence[str]) -> dict[str, list[Any]]:
    """Pair keys grouped like :func:`_groups` groups the values (same order)."""
    out: dict[str, list[Any]] = {}
    for key, character in zip(keys, characters, strict=True):
        out.setdefault(character, []).append(key)
    return out


class _Stats:
    """Bootstrap bookkeeping: one generator, shared settings, the image count below which intervals are flagged."""

    def __init__(self, samples: int, confidence: float, seed: int, min_images: int = 1) -> None:
        self.samples = samples
        self.confidence = confidence
        self.min_images = min_images
        self.rng = np.random.default_rng(seed)

    def summary(self, groups: Mapping[str, np.ndarray]) -> tuple[dict[str, Any], np.ndarray] | None:
        """``({mean, ci_low, ci_high, n, few_images, per_character}, distribution)`` or ``None`` when empty.

        ``few_images`` is true for a character with fewer than ``min_images`` values, and overall when any
        character is flagged."""
        groups = {k: v for k, v in groups.items() if len(v)}
        if not groups:
            return None
        overall, dist = M.estimate(groups, self.samples, self.confidence, self.rng)
        per = {k: {**M.estimate({k: v}, self.samples, self.confidence, self.rng)[0].to_json(),
                   "few_images": bool(len(v) < self.min_images)}
               for k, v in sorted(groups.items())}
        return {**overall.to_json(), "few_images": any(e["few_images"] for e in per.values()),
                "per_character": per}, dist


def _matched_pairs(groups: Mapping[str, Mapping[str, np.ndarray] | None],
                   keys: Mapping[str, Mapping[str, list[Any]]] | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """character -> (fine-tuned values, base values) of the keys both models have (at least 2 per character)."""
    fin, base = groups.get("finetuned"), groups.get("base")
    if not keys or fin is None or base is None or "finetuned" not in keys or "base" not in keys:
        return {}
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for character, values in fin.items():
        if character not in base:
            continue
        partner = dict(zip(keys["base"].get(character, []), base[character], strict=True))
        matched = [(v, partner[k]) for k, v in zip(keys["finetuned"][character], values, strict=True) if k in partner]
        if len(matched) >= 2:
            out[character] = (np.array([a for a, _ in matched]), np.array([b for _, b in matched]))
    return out


def _metric_entry(name: str, stats: _Stats, groups: Mapping[str, Mapping[str, np.ndarray] | None],
                  extra: Mapping[str, dict[str, Any]] | None = None,
                  keys: Mapping[str, Mapping[str, list[Any]]] | None = None) -> dict[str, Any]:
    """One metric's entry of ``evaluation.json``: both models' summaries and the difference between them.

    The difference's interval is paired (:func:`evaluation.metrics.paired_difference`) when every character
    both models have holds at least 2 values with the same key in both (``keys``: model -> character -> key
    of each value: the image's path, same file name in both folders), else the difference of two independent
    bootstraps. ``difference_method`` says which and ``pairs`` how many pairs were used.
    """
    info = METRIC_INFO[name]
    entry: dict[str, Any] = {"description": info["description"], "higher_is_better": info["higher_is_better"]}
    dists: dict[str, Any] = {}
    for model in MODELS:
        model_groups = groups.get(model)
        summary = stats.summary(model_groups) if model_groups is not None else None
        if summary is None:
            entry[model] = None
            continue
        entry[model], dists[model] = summary
        if extra and model in extra:
            entry[model].update(extra[model])
    entry.update({"difference": None, "difference_ci_low": None, "difference_ci_high": None,
                  "improvement": None, "improvement_ci_low": None, "improvement_ci_high": None,
                  "difference_method": None, "pairs": None})
    if entry["finetuned"] is not None and entry["base"] is not None:
        pairs = _matched_pairs(groups, keys)
        common = set(groups["finetuned"] or {}) & set(groups["base"] or {})  # type: ignore[arg-type]
        if pairs and set(pairs) == common:
            diff, _ = M.paired_difference(pairs, stats.samples, stats.confidence, stats.rng)
            entry.update({"difference_method": "paired", "pairs": int(sum(len(a) for a, _ in pairs.values()))})
        else:
            fin = M.Estimate(entry["finetuned"]["mean"], 0, 0, entry["finetuned"]["n"])
            base = M.Estimate(entry["base"]["mean"], 0, 0, entry["base"]["n"])
            diff = M.difference((fin, dists["finetuned"]), (base, dists["base"]), stats.confidence)
            entry["difference_method"] = "unpaired"
        sign = 1.0 if info["higher_is_better"] else -1.0
        low, high = sorted((sign * diff.ci_low, sign * diff.ci_high))
        entry.update({"difference": round(diff.mean, 6), "difference_ci_low": round(diff.ci_low, 6),
                      "difference_ci_high": round(diff.ci_high, 6), "improvement": round(sign * diff.mean, 6),
                      "improvement_ci_low": round(low, 6), "improvement_ci_high": round(high, 6)})
    return entry
