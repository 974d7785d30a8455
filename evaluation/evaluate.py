"""The Evaluate step: score generated images against the reference characters, base model versus fine-tuned.

Inputs (folder layouts):

- images to score (the fine-tuned model's): ``IMAGES/<character>/*.png|jpg|webp``; the folder name is
  the intended character. ``IMAGES/generation_log.json`` (written by
  :func:`evaluation.generation.generate_prompt_set`), where present, gives each image's prompt and the
  per-prompt outcomes (blocked prompts and outputs);
- the base model's images, same layout (optional);
- references: ``REFERENCES/<character>/*`` image files (a character defined only by ``references.yaml`` frame
  regions is resolved first: ``storyboard evaluate --video``, or the dataset's ``references/`` that ExtractFrames
  wrote); folders that are no character (``dropped/``, names starting with ``.`` or ``_``) are skipped with a
  warning;
- training crops (optional, for memorisation): ``TRAINING/crops.jsonl`` from the data preparation
  (kept rows, ``path`` relative to ``TRAINING``), or ``TRAINING/<character>/*``, or a flat folder;
- held-out real crops (optional, for calibration): ``CALIBRATION/<character>/*`` plus
  ``CALIBRATION/_background/*`` (windows with no character).

Outputs, written atomically to ``OUT``: ``evaluation.json`` (schema:
``evaluation/schemas/evaluation.schema.json``, checked by :mod:`evaluation.schema`; the Condition step reads
only ``gate.status``, and the Fail step the ``gate.summary`` sentence, both always present),
``report.html`` (self-contained: images and the charts are embedded) and, when a training log is given,
``loss_curve.png``. The ``model`` block of ``evaluation.json`` describes the evaluated model where the caller
knows it (:func:`evaluation.diffusers_generator.describe_model`); a random-weight stand-in base puts a
banner on the report and a warning in the document.

Calibration (DESIGN.md §7): the ceiling is the similarity of held-out real crops of a character to its
references; the floor is the similarity of other characters' crops and of background windows to them.
Without held-out crops the training crops (when their character is known) stand in; without either, the
references themselves (each against the others: leave-one-out) give the ceiling and the other
characters' references the floor.

The gate (DESIGN.md §7, :func:`decide_gate`) passes only when every criterion it is configured with was measured
and met: the fine-tuned character similarity at least ``min_character_similarity``, its improvement over the
base model at least ``min_improvement``, and the near-copy rate (share of fine-tuned images whose similarity to
some training crop reaches ``memorisation_threshold``) at most ``max_near_copy_rate``. A criterion that could not
be measured (no base images, no training crops) makes the gate ``inconclusive``, never ``passed``.

Differences between the models use a paired bootstrap where base and fine-tuned images share file names (the
same character, prompt, seed and image index): :func:`evaluation.metrics.paired_difference`, through
:mod:`evaluation.bootstrap`. Estimates from fewer than ``min_images_per_character`` values per character carry
``few_images: true`` (a percentile interval over a handful of values has only a few possible means).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.embedders import make_embedder
from core.embeddings import ImageEmbedder, TextImageEmbedder
from core.errors import InputError
from core.io import write_bytes, write_json, write_text
from evaluation import metrics as M
from evaluation.bootstrap import METRIC_INFO, MODELS, _groups, _keyed, _metric_entry, _Stats
from evaluation.calibration import calibrate, calibrated, held_out_training
from evaluation.gate import GATE_STATUSES, decide_gate
from evaluation.generation import read_generation_log
from evaluation.inputs import (
    BACKGROUND_FOLDER,
    FOLDER_NAME,
    NOT_CHARACTER_FOLDERS,
    REFERENCES_YAML,
    ImageItem,
    check_dimensions,
    embed_items,
    load_rgb,
    scan_character_folders,
    scan_training_crops,
    skip_reason,
)
from evaluation.provenance import LOSS_CURVE, _generation_summary, _model_block, _prompt_texts
from evaluation.schema import SCHEMA_VERSION, validate_evaluation

if TYPE_CHECKING:
    from core.config import StoryboardConfig

log = logging.getLogger(__name__)

MIN_IMAGES_PER_CHARACTER = 2  # hard floor: no mean or interval below it
__all__ = ["BACKGROUND_FOLDER", "FOLDER_NAME", "GATE_STATUSES", "NOT_CHARACTER_FOLDERS", "REFERENCES_YAML",
           "EvaluationResult", "ImageItem", "check_dimensions", "decide_gate", "embed_items", "load_rgb",
           "run_evaluation", "scan_character_folders", "scan_training_crops", "skip_reason"]


@dataclass
class EvaluationResult:
    """What :func:`run_evaluation` produced.

    Attributes:
        evaluation: the ``evaluation.json`` document (valid against the schema).
        evaluation_path, report_path: the written files.
        passed: whether the gate passed (``evaluation["gate"]["status"] == "passed"``).
        status: the gate's status: ``passed``, ``failed`` or ``inconclusive``.
    """

    evaluation: dict[str, Any]
    evaluation_path: Path
    report_path: Path
    passed: bool
    warnings: list[str] = field(default_factory=list)
    status: str = "failed"


@dataclass
class _ModelData:
    name: str
    root: Path
    items: list[ImageItem]
    embeddings: np.ndarray
    similarity: np.ndarray  # (N, C) against the reference characters
    generation: dict[str, Any] | None
    prompts: list[str | None]


def run_evaluation(images_dir: str | Path, references_dir: str | Path, out_dir: str | Path, *,
                   baseline_dir: str | Path | None = None, training_crops_dir: str | Path | None = None,
                   calibration_dir: str | Path | None = None, config: StoryboardConfig | None = None,
                   embedder: ImageEmbedder | None = None, evaluated_model: Mapping[str, Any] | None = None,
                   training_log: Sequence[Mapping[str, Any]] | None = None) -> EvaluationResult:
    """Score the images of ``images_dir`` (and of ``baseline_dir``) against the references; write
    ``out_dir/evaluation.json`` and ``out_dir/report.html`` atomically.

    Args:
        images_dir: the fine-tuned model's images, ``DIR/<character>/*``.
        references_dir: ``DIR/<character>/*`` reference images (every evaluated character needs some).
        out_dir: where the two files go (created).
        baseline_dir: the base model's images, same layout.
        training_crops_dir: training crops (memorisation; calibration fallback).
        calibration_dir: held-out real crops ``DIR/<character>/*`` and ``DIR/_background/*``.
        config: the project configuration (``evaluation`` settings, ``embeddings`` backend, characters);
            default: all defaults.
        embedder: overrides the backend built from ``config.embeddings``.
        evaluated_model: the evaluated model (``evaluation.diffusers_generator.describe_model``), written
            as ``model`` (``null`` when not given); ``stand_in`` true adds the stand-in warning and banner.
        training_log: the training job's ``training_log.jsonl`` rows (``step``, ``loss``, ...); when it has
            rows, ``OUT/loss_curve.png`` is drawn, embedded in the report and named in
            ``model.training.loss_curve``.

    Returns:
        :class:`EvaluationResult`.

    The gate's thresholds are ``config.evaluation``'s ``min_character_similarity``, ``min_improvement`` and
    ``max_near_copy_rate`` (the pipeline passes its parameters in through the configuration).

    Raises:
        InputError: a missing or empty folder, a character with no references (or only ``references.yaml``),
            fewer than 2 images for a character, an unreadable image, or mismatched embedding dimensions.
            All folder checks run before any image is embedded.
    """
    from core.config import StoryboardConfig

    config = config or StoryboardConfig()
    settings = config.evaluation
    out_dir = Path(out_dir)
    warnings: list[str] = []

    # 1. Folders and layouts, before any expensive work.
    references = scan_character_folders(references_dir, "references", "--references", warnings=warnings)
    generations = {"finetuned": read_generation_log(images_dir) if Path(images_dir).is_dir() else None,
                   "base": read_generation_log(baseline_dir) if baseline_dir and Path(baseline_dir).is_dir()
                   else None}
    sets = {"finetuned": scan_character_folders(images_dir, "images", "--images",
                                                min_images=MIN_IMAGES_PER_CHARACTER,
                                                generation=generations["finetuned"], warnings=warnings)}
    if baseline_dir is not None:
        sets["base"] = scan_character_folders(baseline_dir, "baseline images", "--baseline-images",
                                              min_images=MIN_IMAGES_PER_CHARACTER, generation=generations["base"],
                                              warnings=warnings)
    names = sorted(references)
    for model, folders in sets.items():
        option = "--images" if model == "finetuned" else "--baseline-images"
        missing = sorted(set(folders) - set(references))
        if missing:
            raise InputError(f"{option} has images of {missing} but --references {references_dir} has no folder for "
                             f"them (reference characters: {names}); add {references_dir}/<character>/ images "
                             "or remove those folders")
    characters = sorted(sets["finetuned"])
    if "base" in sets and sorted(sets["base"]) != characters:
        warnings.append(f"base images cover {sorted(sets['base'])}, fine-tuned images cover {characters}; "
                        "the comparison is over different characters")
    training = scan_training_crops(training_crops_dir, warnings) if training_crops_dir is not None else None
    calibration = None
    if calibration_dir is not None:
        cal_folders = scan_character_folders(calibration_dir, "calibration crops", "--calibration-crops",
                                             allow_background=True, warnings=warnings)
        calibration = [item for items in cal_folders.values() for item in items]
        unknown = sorted({i.character for i in calibration if i.character and i.character not in references})
        if unknown:
            warnings.append(f"calibration crops of {unknown} have no references; they count towards the floor only")

    # 2. Embeddings.
    embedder = embedder or make_embedder(config.embeddings, config.aws, purpose="evaluation")
    ref_emb = {name: embed_items(embedder, references[name], f"references of {name}") for name in names}
    model_items = {m: [item for c in sorted(folders) for item in folders[c]] for m, folders in sets.items()}
    model_emb = {m: embed_items(embedder, items, f"{m} images") for m, items in model_items.items()}
    training_emb = embed_items(embedder, training, "training crops") if training else None
    cal_emb = embed_items(embedder, calibration, "calibration crops") if calibration else None
    all_sets = {f"references/{k}": v for k, v in ref_emb.items()}
    all_sets.update({f"{k} images": v for k, v in model_emb.items()})
    if training_emb is not None:
        all_sets["training crops"] = training_emb
    if cal_emb is not None:
        all_sets["calibration crops"] = cal_emb
    dimension = check_dimensions(all_sets)
    if int(getattr(embedder, "dimension", dimension)) != dimension:
        raise InputError(f"mismatched embedding dimensions: backend {embedder.name} declares "
                         f"{embedder.dimension} but returned {dimension}")

    text_embedder = embedder if isinstance(embedder, TextImageEmbedder) else None
    data: dict[str, _ModelData] = {}
    for model, items in model_items.items():
        root = Path(images_dir if model == "finetuned" else baseline_dir)  # type: ignore[arg-type]
        data[model] = _ModelData(
            name=model, root=root, items=items, embeddings=model_emb[model],
            similarity=M.reference_similarity(model_emb[model], ref_emb), generation=generations[model],
            prompts=_prompt_texts(items, generations[model], config))

    # 3. Metrics.
    stats = _Stats(settings.bootstrap_samples, settings.confidence_level, settings.random_seed,
                   settings.min_images_per_character)
    col = {n: j for j, n in enumerate(names)}
    per_image: dict[str, dict[str, np.ndarray | list]] = {}
    groups: dict[str, dict[str, dict[str, np.ndarray] | None]] = {k: {} for k in METRIC_INFO}
    keys: dict[str, dict[str, dict[str, list[Any]]]] = {k: {} for k in METRIC_INFO}  # pairing keys
    extra_memo: dict[str, dict[str, Any]] = {}
    separation: dict[str, float | None] = {m: None for m in MODELS}
    if len(names) < 2:
        warnings.append("identity accuracy needs references of at least 2 characters; it is left out")
    for model, d in data.items():
        intended = [item.character for item in d.items]
        own = d.similarity[np.arange(len(intended)), [col[c] for c in intended]]
        predicted = M.predicted_characters(d.similarity, names)
        correct = np.array([p == c for p, c in zip(predicted, intended, strict=True)], dtype=np.float64)
        fidelity = np.full(len(intended), np.nan)
        if text_embedder is not None:
            known = [i for i, p in enumerate(d.prompts) if p]
            if known:
                text_emb = np.asarray(text_embedder.embed_texts([d.prompts[i] for i in known]), dtype=np.float32)
                check_dimensions({"prompt texts": text_emb, f"{model} images": d.embeddings})
                fidelity[known] = M.paired_cosine(text_emb, d.embeddings[known])
        memo = (M.max_similarity(d.embeddings, training_emb) if training_emb is not None and len(training_emb)
                else np.full(len(intended), np.nan))
        per_image[model] = {"own": own, "predicted": predicted, "fidelity": fidelity, "memo": memo}
        rels = [item.rel for item in d.items]  # same file name in both folders: same character, prompt, seed, image
        for metric in ("character_similarity", "identity_accuracy", "memorisation"):
            keys[metric][model] = _keyed(rels, intended)
        groups["character_similarity"][model] = _groups(own, intended)
        groups["identity_accuracy"][model] = _groups(correct, intended) if len(names) >= 2 else None
        ok = ~np.isnan(fidelity)
        kept = [c for c, k in zip(intended, ok, strict=True) if k]
        groups["prompt_fidelity"][model] = _groups(fidelity[ok], kept) if ok.any() else None
        keys["prompt_fidelity"][model] = _keyed([r for r, k in zip(rels, ok, strict=True) if k], kept)
        if training_emb is not None:
            groups["memorisation"][model] = _groups(memo, intended)
            near = memo >= settings.memorisation_threshold
            extra_memo[model] = {
                "near_copy_rate": round(float(np.mean(near)), 6), "threshold": settings.memorisation_threshold,
                "near_copy_rate_per_character": {c: round(float(np.mean(v)), 6)
                                                 for c, v in sorted(_groups(near, intended).items())}}
        else:
            groups["memorisation"][model] = None
        diversity: dict[str, list[float]] = {}
        by_prompt: dict[tuple[str, Any], list[int]] = {}
        for i, item in enumerate(d.items):
            key = (item.character, item.meta["prompt_index"] if item.meta else None)
            by_prompt.setdefault(key, []).append(i)
        prompt_keys: dict[str, list[Any]] = {}
        for (character, prompt_index), idx in by_prompt.items():
            if len(idx) >= 2:
                diversity.setdefault(character, []).append(M.pairwise_diversity(d.embeddings[idx]))
                prompt_keys.setdefault(character, []).append(prompt_index)
        groups["diversity"][model] = {k: np.asarray(v) for k, v in diversity.items()} or None
        keys["diversity"][model] = prompt_keys
        separation[model] = M.separation_auc(d.similarity, intended, names)
    if text_embedder is None:
        warnings.append(f"prompt fidelity needs an encoder of texts and images ({embedder.name} embeds images "
                        "only); use embeddings.backend: titan")
    if training_emb is None:
        warnings.append("memorisation needs --training-crops: the near-copy rate is not measured, so the gate is "
                        "inconclusive")

    metric_entries = {name: _metric_entry(name, stats, groups[name], extra_memo if name == "memorisation" else None,
                                          keys[name])
                      for name in METRIC_INFO}
    few = {m: sorted(c for c, e in (metric_entries["character_similarity"][m] or {}).get("per_character", {}).items()
                     if e["few_images"]) for m in MODELS}
    for model, characters_few in few.items():
        if characters_few:
            warnings.append(f"{model} images: {characters_few} have fewer than {settings.min_images_per_character} "
                            "images each (evaluation.min_images_per_character); their intervals are flagged "
                            "(few_images) and rest on too few values to trust")
    cal_source, cal_items, cal_e = "held-out real crops", calibration, cal_emb
    backgrounds_only = calibration is not None and not any(item.character for item in calibration)
    if (calibration is None or backgrounds_only) and training is not None and training_emb is not None:
        cal_source = "training crops apart from the references"
        cal_items, cal_e, near_refs = held_out_training(training, training_emb, ref_emb,
                                                        settings.memorisation_threshold)
        if backgrounds_only and cal_emb is not None:  # ExtractFrames' windows of frames with no character
            cal_source += ", with background windows"
            cal_items, cal_e = list(cal_items) + list(calibration), np.vstack([cal_e, cal_emb])
        if near_refs:
            warnings.append(f"calibration: {near_refs} training crop(s) are near-copies of a reference (similarity "
                            f">= {settings.memorisation_threshold}) and were left out of the held-out crops")
    calibration_out = calibrate(names, ref_emb, cal_items, cal_e, cal_source, stats.summary,
                                settings.min_calibration_auc, warnings)
    cs = metric_entries["character_similarity"]
    for model in MODELS:
        if cs[model] is not None:
            cs[model]["calibrated"] = calibrated(cs[model]["mean"], calibration_out)

    # 4. Gate: every configured criterion measured and met (DESIGN §7).
    fin_mean = cs["finetuned"]["mean"]
    memo_fin = metric_entries["memorisation"]["finetuned"]
    gate = decide_gate(
        character_similarity=fin_mean, improvement=cs["improvement"],
        base_similarity=cs["base"]["mean"] if cs["base"] else None,
        near_copy_rate=memo_fin["near_copy_rate"] if memo_fin else None,
        near_copy_rate_per_character=memo_fin["near_copy_rate_per_character"] if memo_fin else None,
        min_character_similarity=settings.min_character_similarity, min_improvement=settings.min_improvement,
        max_near_copy_rate=settings.max_near_copy_rate,
        calibration_auc=calibration_out["auc"] if calibration_out["separable"] is not None else None,
        calibration_auc_per_character={c: e["auc"] for c, e in calibration_out["per_character"].items()
                                       if e["auc"] is not None} or None,
        min_calibration_auc=settings.min_calibration_auc)
    if cs["improvement"] is None:
        warnings.append("no --baseline-images: the improvement over the base model is not measured, so the gate "
                        "is inconclusive")
    model_block = _model_block(evaluated_model, training_log, warnings)

    images_json: list[dict[str, Any]] = []
    for model, d in data.items():
        p = per_image[model]
        for i, item in enumerate(d.items):
            images_json.append({
                "model": model,
                "path": item.rel,
                "character": item.character,
                "prompt_index": item.meta["prompt_index"] if item.meta else None,
                "seed": item.meta["seed"] if item.meta else None,
                "prompt": d.prompts[i],
                "similarity": {n: round(float(d.similarity[i, j]), 6) for j, n in enumerate(names)},
                "character_similarity": round(float(p["own"][i]), 6),
                "predicted_character": p["predicted"][i],
                "prompt_fidelity": None if np.isnan(p["fidelity"][i]) else round(float(p["fidelity"][i]), 6),
                "max_training_similarity": None if np.isnan(p["memo"][i]) else round(float(p["memo"][i]), 6),
            })

    evaluation: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "embedding": {"backend": str(embedder.name), "dimension": dimension},
        "characters": characters,
        "reference_characters": names,
        "inputs": {
            "images": str(images_dir), "baseline_images": str(baseline_dir) if baseline_dir else None,
            "references": str(references_dir),
            "training_crops": str(training_crops_dir) if training_crops_dir else None,
            "calibration_crops": str(calibration_dir) if calibration_dir else None,
        },
        "models": {
            model: ({"images": len(data[model].items), "references_per_character":
                     {n: len(references[n]) for n in names},
                     "generation": _generation_summary(data[model].generation)} if model in data else None)
            for model in MODELS
        },
        "settings": {"bootstrap_samples": settings.bootstrap_samples,
                     "confidence_level": settings.confidence_level, "random_seed": settings.random_seed,
                     "memorisation_threshold": settings.memorisation_threshold,
                     "min_images_per_character": settings.min_images_per_character,
                     "min_calibration_auc": settings.min_calibration_auc},
        "metrics": metric_entries,
        "separation_auc": {m: (None if separation[m] is None else round(separation[m], 6)) for m in MODELS},
        "calibration": calibration_out,
        "gate": gate,
        "images": images_json,
        "warnings": warnings,
        "model": model_block,
    }
    validate_evaluation(evaluation)

    # 5. Outputs.
    from evaluation.report import loss_curve_png, render_report

    curve = None
    if model_block is not None and model_block.get("training") and model_block["training"]["loss_curve"]:
        curve = loss_curve_png(training_log or [], stand_in=bool(model_block.get("stand_in")))
        write_bytes(out_dir / LOSS_CURVE, curve)
    html = render_report(evaluation, references=references,
                         image_roots={m: d.root for m, d in data.items()}, settings=settings, loss_curve=curve)
    evaluation_path = write_json(out_dir / "evaluation.json", evaluation)
    report_path = write_text(out_dir / "report.html", html)
    log.info("evaluation: character similarity %.3f (fine-tuned)%s; %s; wrote %s and %s", fin_mean,
             "" if cs["base"] is None else f" vs {cs['base']['mean']:.3f} (base)", gate["summary"],
             evaluation_path, report_path)
    return EvaluationResult(evaluation, evaluation_path, report_path, gate["passed"], warnings, gate["status"])
