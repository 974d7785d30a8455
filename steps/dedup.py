"""Near-duplicate removal by cosine similarity of image embeddings, in blocks.

Within each group (a character), crops are visited from the sharpest down; a crop whose cosine
similarity to an already kept crop of its group is at or above ``threshold`` is a duplicate of the most
similar kept crop, so the sharpest crop of every group of near-duplicates is the one kept (the greedy
scheme of imagededup and fastdup; DESIGN §9 for their thresholds, 0.9 for CNN features).

Similarities are computed block by block (``block_size`` rows against the kept set), so memory stays at
``block_size x kept`` floats even for tens of thousands of crops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.embeddings import normalize_rows


@dataclass
class DedupResult:
    """Per item (same order as the input): whether it is kept, the index of the kept item it
    duplicates (``-1`` for kept items) and that similarity (``nan`` for kept items)."""

    keep: np.ndarray
    duplicate_of: np.ndarray
    similarity: np.ndarray

    @property
    def kept_count(self) -> int:
        """Number of kept items."""
        return int(self.keep.sum())


def deduplicate(embeddings: np.ndarray, sharpness: Sequence[float], groups: Sequence[str],
                threshold: float, block_size: int = 2048) -> DedupResult:
    """Greedy de-duplication inside each group, keeping the sharpest item of each near-duplicate set.

    Args:
        embeddings: ``(N, D)`` float array (normalised here).
        sharpness: ``(N,)`` priority, higher kept first (variance of the Laplacian).
        groups: ``(N,)`` group label per item; items of different groups are never duplicates.
        threshold: cosine similarity in (0, 1] at or above which two items are duplicates.
        block_size: items compared per block (memory: ``block_size`` x kept items).

    Raises:
        ValueError: lengths differ or the threshold is outside (0, 1].
    """
    emb = normalize_rows(np.asarray(embeddings, dtype=np.float32)) if len(embeddings) else np.zeros((0, 1))
    n = emb.shape[0]
    if len(sharpness) != n or len(groups) != n:
        raise ValueError(f"deduplicate: {n} embeddings, {len(sharpness)} sharpness values, {len(groups)} groups")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    keep = np.zeros(n, dtype=bool)
    duplicate_of = np.full(n, -1, dtype=np.int64)
    similarity = np.full(n, np.nan, dtype=np.float32)
    group_arr = np.asarray(groups)
    for group in sorted(set(groups)):
        members = np.flatnonzero(group_arr == group)
        order = members[np.argsort(-np.asarray(sharpness, dtype=np.float64)[members], kind="stable")]
        kept_idx: list[int] = []
        kept_emb = np.zeros((0, emb.shape[1]), dtype=np.float32)
        for start in range(0, len(order), block_size):
            block = order[start:start + block_size]
            # Similarity of the block to everything kept before it, then resolved in order inside the block.
            prior = block_size_matmul(emb[block], kept_emb, block_size)
            inner = emb[block] @ emb[block].T
            block_kept: list[int] = []
            for i, item in enumerate(block):
                best_sim, best = -1.0, -1
                if prior.shape[1]:
                    j = int(prior[i].argmax())
                    best_sim, best = float(prior[i, j]), kept_idx[j]
                for k in block_kept:
                    if inner[i, k] > best_sim:
                        best_sim, best = float(inner[i, k]), int(block[k])
                if best >= 0 and best_sim >= threshold:
                    duplicate_of[item] = best
                    similarity[item] = best_sim
                else:
                    keep[item] = True
                    block_kept.append(i)
            kept_idx.extend(int(block[k]) for k in block_kept)
            kept_emb = np.vstack([kept_emb, emb[block[block_kept]]]) if block_kept else kept_emb
    return DedupResult(keep, duplicate_of, similarity)


def block_size_matmul(a: np.ndarray, b: np.ndarray, block_size: int) -> np.ndarray:
    """``a @ b.T`` computed over blocks of ``block_size`` rows of ``b`` (bounded temporary memory)."""
    if b.shape[0] == 0:
        return np.zeros((a.shape[0], 0), dtype=np.float32)
    parts = [a @ b[s:s + block_size].T for s in range(0, b.shape[0], block_size)]
    return np.hstack(parts)
