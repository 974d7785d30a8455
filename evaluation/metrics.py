"""The evaluation metrics of DESIGN.md §7 on embeddings, with bootstrap confidence intervals.

All functions take L2-normalised embedding rows (``(N, D)`` float arrays, as every
:class:`core.embeddings.ImageEmbedder` returns) so the cosine similarity of two images is the dot
product of their rows. For character c with reference embeddings R_c and generated images G_c:

- character similarity of an image g: mean over r in R_c of cos(g, r) (the DreamBooth paper's DINO and
  CLIP-I metrics are this average pairwise cosine, computed with those encoders; Ruiz et al. 2023);
- identity: the character whose references are most similar on average (the predicted character);
  identity accuracy is the share of images whose predicted character is the intended one;
- prompt fidelity: cos(prompt, image) where texts and images share one space (Titan; the paper's CLIP-T);
- diversity: mean pairwise cosine distance ``1 - cos`` among the images of one prompt;
- memorisation: the highest similarity of a generated image to any training crop.

Aggregates are macro averages: the mean of the per-character means, so every character weighs the same.
Confidence intervals come from a stratified percentile bootstrap (Efron & Tibshirani 1993): values are
resampled with replacement inside each character, the macro mean recomputed, and the interval read
from the quantiles of the resampled means. Where base and fine-tuned images share prompts and seeds, the
difference between the models comes from a paired bootstrap (:func:`paired_difference`): the (character,
prompt, seed, image) pairs are resampled together, so effects shared by both images of a pair (an easy prompt,
a lucky seed) cancel instead of widening the interval (Efron & Tibshirani 1993, ch. 6 and 16).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

from core.embeddings import cosine_matrix


@dataclass(frozen=True)
class Estimate:
    """A statistic with its bootstrap interval.

    Attributes:
        mean: the point estimate (macro mean over groups).
        ci_low, ci_high: bounds of the percentile bootstrap interval at the chosen confidence level.
        n: number of values (images, prompts) behind the estimate.
    """

    mean: float
    ci_low: float
    ci_high: float
    n: int

    def to_json(self) -> dict[str, float | int]:
        """``{"mean", "ci_low", "ci_high", "n"}`` rounded to 6 decimals."""
        return {"mean": round(self.mean, 6), "ci_low": round(self.ci_low, 6), "ci_high": round(self.ci_high, 6),
                "n": self.n}


def _check_groups(groups: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    clean = {k: np.asarray(v, dtype=np.float64).ravel() for k, v in groups.items()}
    clean = {k: v for k, v in clean.items() if v.size}
    if not clean:
        raise ValueError("no values to aggregate: every group is empty")
    for key, values in clean.items():
        if not np.all(np.isfinite(values)):
            raise ValueError(f"group {key!r} has non-finite values")
    return clean


def bootstrap_distribution(groups: Mapping[str, np.ndarray], samples: int,
                           rng: np.random.Generator) -> np.ndarray:
    """Bootstrap distribution of the macro mean: ``(samples,)`` resampled means.

    Each group (a character's per-image or per-prompt values) is resampled with replacement to its own
    size; the macro mean is the mean over groups of the group means. Empty groups are skipped.

    Raises:
        ValueError: every group is empty, a value is not finite, or ``samples`` < 1.
    """
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    clean = _check_groups(groups)
    total = np.zeros(samples, dtype=np.float64)
    for values in clean.values():
        idx = rng.integers(0, values.size, size=(samples, values.size))
        total += values[idx].mean(axis=1)
    return total / len(clean)


def macro_mean(groups: Mapping[str, np.ndarray]) -> float:
    """Mean over non-empty groups of each group's mean.

    Raises:
        ValueError: every group is empty.
    """
    clean = _check_groups(groups)
    return float(np.mean([v.mean() for v in clean.values()]))


def interval(distribution: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval ``(low, high)`` of a bootstrap distribution at ``confidence`` (0.5..0.999)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(distribution, [alpha, 1.0 - alpha])
    return float(low), float(high)


def estimate(groups: Mapping[str, np.ndarray], samples: int, confidence: float,
             rng: np.random.Generator) -> tuple[Estimate, np.ndarray]:
    """Macro mean of ``groups`` with its stratified bootstrap interval; also returns the distribution
    (for differences between models).

    Raises:
        ValueError: every group is empty.
    """
    clean = _check_groups(groups)
    dist = bootstrap_distribution(clean, samples, rng)
    low, high = interval(dist, confidence)
    return Estimate(macro_mean(clean), low, high, int(sum(v.size for v in clean.values()))), dist


def difference(a: tuple[Estimate, np.ndarray], b: tuple[Estimate, np.ndarray],
               confidence: float) -> Estimate:
    """``a - b`` with the interval of the difference of two independent bootstrap distributions
    (of equal length). Use :func:`paired_difference` where the values of ``a`` and ``b`` are paired (same
    prompts and seeds): the unpaired interval ignores their shared variation and is too wide."""
    (est_a, dist_a), (est_b, dist_b) = a, b
    if dist_a.shape != dist_b.shape:
        raise ValueError(f"bootstrap distributions differ in length: {dist_a.shape} vs {dist_b.shape}")
    low, high = interval(dist_a - dist_b, confidence)
    return Estimate(est_a.mean - est_b.mean, low, high, min(est_a.n, est_b.n))


def paired_difference(pairs: Mapping[str, tuple[np.ndarray, np.ndarray]], samples: int, confidence: float,
                      rng: np.random.Generator) -> tuple[Estimate, np.ndarray]:
    """``a - b`` over matched pairs, with a stratified paired percentile bootstrap interval.

    Args:
        pairs: character -> ``(a, b)``, two ``(n_c,)`` arrays whose i-th values belong to the same (prompt,
            seed, image) of that character (for example the fine-tuned and the base image of one request).
        samples: bootstrap resamples (>= 1).
        confidence: level of the percentile interval, in (0, 1).
        rng: the random generator.

    Returns:
        ``(estimate, distribution)``: the macro mean over characters of the mean pairwise difference (equal to
        the difference of the two macro means over the matched values), its interval, ``n`` the number of
        pairs; the ``(samples,)`` resampled macro means. Each resample draws pair indices with replacement
        inside each character and takes both values of a drawn pair (Efron & Tibshirani 1993, the paired
        bootstrap), so variation shared by both members of a pair cancels.

    Raises:
        ValueError: the two arrays of a character differ in length, every character is empty, a value is not
            finite, or ``samples`` < 1.
    """
    diffs: dict[str, np.ndarray] = {}
    for key, (a, b) in pairs.items():
        a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
        if a.shape != b.shape:
            raise ValueError(f"pairs of {key!r} differ in length: {a.size} vs {b.size}")
        diffs[key] = a - b
    return estimate(diffs, samples, confidence, rng)


def reference_similarity(embeddings: np.ndarray, references: Mapping[str, np.ndarray]) -> np.ndarray:
    """Mean cosine similarity of every image to every character's references.

    Args:
        embeddings: ``(N, D)`` image embeddings.
        references: character name -> ``(M_c, D)`` reference embeddings (M_c >= 1).

    Returns:
        ``(N, C)`` array, column j for the j-th character of ``references`` (in its order); values in [-1, 1].

    Raises:
        ValueError: a character has no reference, or the dimensions D differ.
    """
    columns = []
    for name, refs in references.items():
        refs = np.asarray(refs)
        if refs.ndim != 2 or refs.shape[0] == 0:
            raise ValueError(f"character {name!r} has no reference embedding")
        columns.append(cosine_matrix(embeddings, refs).mean(axis=1) if len(embeddings) else
                       np.zeros(0, dtype=np.float32))
    return np.stack(columns, axis=1) if columns else np.zeros((len(embeddings), 0))


def predicted_characters(similarity: np.ndarray, names: Sequence[str]) -> list[str]:
    """The most similar character of each row of a ``(N, C)`` similarity matrix (ties: first in order)."""
    if similarity.shape[1] != len(names):
        raise ValueError(f"{similarity.shape[1]} similarity columns for {len(names)} character names")
    return [names[j] for j in np.argmax(similarity, axis=1)] if len(similarity) else []


def pairwise_diversity(embeddings: np.ndarray) -> float:
    """Mean cosine distance ``1 - cos`` over the distinct pairs of ``(n, D)`` rows (n >= 2); in [0, 2].

    Raises:
        ValueError: fewer than two rows.
    """
    n = len(embeddings)
    if n < 2:
        raise ValueError(f"diversity needs at least 2 images, got {n}")
    sim = cosine_matrix(embeddings, embeddings)
    upper = sim[np.triu_indices(n, k=1)]
    return float(np.mean(1.0 - upper))


def max_similarity(embeddings: np.ndarray, others: np.ndarray) -> np.ndarray:
    """``(N,)`` highest cosine similarity of each row of ``embeddings`` to any row of ``others`` (M >= 1)."""
    if len(others) == 0:
        raise ValueError("no embeddings to compare with (memorisation needs training crops)")
    if len(embeddings) == 0:
        return np.zeros(0, dtype=np.float32)
    return cosine_matrix(embeddings, others).max(axis=1)


def paired_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N,)`` cosine of row i of ``a`` with row i of ``b`` (prompt fidelity: prompt i vs image i)."""
    if a.shape != b.shape:
        raise ValueError(f"paired embeddings differ in shape: {a.shape} vs {b.shape}")
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.clip(np.sum(an * bn, axis=1), -1.0, 1.0)


def separation_auc(similarity: np.ndarray, intended: Sequence[str], names: Sequence[str]) -> float | None:
    """Area under the ROC curve of "similarity to a character" for (image, its intended character) pairs
    versus (image, any other character) pairs.

    1.0 means every image is closer to its own character's references than any image is to another
    character's; 0.5 is chance. ``None`` when there is only one character (no negative pair).

    Raises:
        ValueError: an intended character is not among ``names``.
    """
    if len(names) < 2 or len(intended) == 0:
        return None
    index = {n: j for j, n in enumerate(names)}
    missing = sorted(set(intended) - set(index))
    if missing:
        raise ValueError(f"intended characters {missing} are not among the reference characters {list(names)}")
    labels = np.zeros(similarity.shape, dtype=np.int8)
    labels[np.arange(len(intended)), [index[c] for c in intended]] = 1
    return float(roc_auc_score(labels.ravel(), similarity.ravel()))


def leave_one_out_similarity(references: np.ndarray) -> np.ndarray:
    """For each of M >= 2 references, its mean similarity to the other M - 1; ``(M,)``.

    Raises:
        ValueError: fewer than two references.
    """
    m = len(references)
    if m < 2:
        raise ValueError("leave-one-out needs at least 2 references")
    sim = cosine_matrix(references, references)
    return (sim.sum(axis=1) - np.diag(sim)) / (m - 1)
