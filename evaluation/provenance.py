"""Where the evaluated images came from: each image's prompt, the generation log's summary, the model block.

The prompt of an image comes from the generation log (``generation_log.json``) or, for images named
``<character>_p<k>_s<seed>_<i>``, from the configured prompts (:func:`_prompt_texts`); the log's per-prompt
problems go to ``models.<model>.generation`` (:func:`_generation_summary`); the evaluated model's description
and its training log make the ``model`` block (:func:`_model_block`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from core.errors import InputError
from evaluation.prompt_set import character_prompts

if TYPE_CHECKING:
    from core.config import StoryboardConfig
    from evaluation.inputs import ImageItem

LOSS_CURVE = "loss_curve.png"


def _prompt_texts(items: Sequence[ImageItem], generation: dict[str, Any] | None,
                  config: StoryboardConfig) -> list[str | None]:
    by_file: dict[str, str] = {}
    if generation:
        for row in generation["records"]:
            for rel in row.get("files") or []:
                if row.get("prompt"):
                    by_file[str(rel)] = str(row["prompt"])
    cache: dict[str, list[str]] = {}
    texts: list[str | None] = []
    for item in items:
        text = by_file.get(item.rel)
        if text is None and item.meta and item.character:
            if item.character not in cache:
                try:
                    cache[item.character] = character_prompts(config.evaluation, config.character(item.character))
                except InputError:
                    cache[item.character] = []
            prompts = cache[item.character]
            k = item.meta["prompt_index"]
            text = prompts[k] if 0 <= k < len(prompts) else None
        texts.append(text)
    return texts


def _generation_summary(generation: dict[str, Any] | None) -> dict[str, Any] | None:
    if not generation:
        return None
    problems = [{"character": r.get("character"), "prompt_index": r.get("prompt_index"), "seed": r.get("seed"),
                 "status": r.get("status"), "requested": r.get("requested"), "returned": r.get("returned"),
                 "error": r.get("error")}
                for r in generation["records"] if r.get("status") != "ok"]
    return {"model_id": generation.get("model_id"), "requests": len(generation["records"]),
            "counts": generation.get("counts") or {}, "problems": problems}


def _model_block(model: Mapping[str, Any] | None, training_log: Sequence[Mapping[str, Any]] | None,
                 warnings: list[str]) -> dict[str, Any] | None:
    """The ``model`` block: a copy of ``model`` with ``training.loss_curve`` set when the log has a loss to draw."""
    if model is None:
        if training_log:
            warnings.append("a training log was given without a model description; no loss curve is drawn")
        return None
    import copy

    from evaluation.diffusers_generator import STAND_IN_WARNING, training_summary

    block = copy.deepcopy(dict(model))
    if training_log and not block.get("training"):
        block["training"] = training_summary(training_log)
    if block.get("training"):
        has_loss = any(isinstance(r.get("loss"), (int, float)) for r in training_log or [])
        block["training"]["loss_curve"] = LOSS_CURVE if has_loss else None
    if block.get("stand_in"):
        warnings.insert(0, STAND_IN_WARNING)
    return block
