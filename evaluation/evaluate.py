"""The Evaluate step: score generated images against the reference characters, base model versus fine-tuned.

Inputs (folder layouts):

- images to score (the fine-tuned model's): ``IMAGES/<character>/*.png|jpg|webp``; the folder name is
  the intended character. ``IMAGES/generation_log.json`` (written by
  :func:`evaluation.generation.generate_prompt_set`), where present, gives each image's prompt and the
  per-prompt outcomes (blocked prompts and outputs);
- the base model's images, same layout (optional);
- references: ``REFERENCES/<character>/*``;
- training crops (optional, for memorisation): ``TRAINING/crops.jsonl`` from the data preparation
  (kept rows, ``path`` relative to ``TRAINING``), or ``TRAINING/<character>/*``, or a flat folder;
- held-out real crops (optional, for calibration): ``CALIBRATION/<character>/*`` plus
  ``CALIBRATION/_background/*`` (windows with no character).

Outputs, written atomically to ``OUT``: ``evaluation.json`` (schema:
``evaluation/schemas/evaluation.schema.json``; the Condition step reads
``metrics.character_similarity.finetuned.mean`` and ``metrics.character_similarity.improvement``),
``report.html`` (self-contained: images and the charts are embedded) and, when a training log is given,
``loss_curve.png``. The ``model`` block of ``evaluation.json`` describes the evaluated model where the caller
knows it (:func:`evaluation.diffusers_generator.describe_model`); a random-weight stand-in base puts a
banner on the report and a warning in the document.

Calibration (DESIGN.md §7): the ceiling is the similarity of held-out real crops of a character to its
references; the floor is the similarity of other characters' crops and of background windows to them.
Without held-out crops the training crops (when their character is known) stand in; without either, the
references themselves (each against the others: leave-one-out) give the ceiling and the other
characters' references the floor.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from evaluation import metrics as M
from evaluation.embeddings import ImageEmbedder, TextImageEmbedder, make_embedder
from evaluation.generation import (
    GENERATION_LOG,
    IMAGE_SUFFIXES,
    character_prompts,
    parse_image_name,
    read_generation_log,
)
from steps.errors import InputError
from steps.io import read_jsonl, write_bytes, write_json, write_text

if TYPE_CHECKING:
    from pipeline.config import StoryboardConfig

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1.0"
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "evaluation.schema.json"
BACKGROUND_FOLDER = "_background"
MIN_IMAGES_PER_CHARACTER = 2
MODELS = ("finetuned", "base")
FOLDER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
LOSS_CURVE = "loss_curve.png"

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
                       "means near-copies of the training data. Needs --training-crops.",
    },
}


@dataclass
class ImageItem:
    """One image file: its path, the path relative to its set's root, its character (or ``None``)."""

    path: Path
    rel: str
    character: str | None
    meta: dict[str, Any] | None = None


@dataclass
class EvaluationResult:
    """What :func:`run_evaluation` produced.

    Attributes:
        evaluation: the ``evaluation.json`` document (valid against the schema).
        evaluation_path, report_path: the written files.
        passed: the gate's verdict (``evaluation["gate"]["passed"]``).
    """

    evaluation: dict[str, Any]
    evaluation_path: Path
    report_path: Path
    passed: bool
    warnings: list[str] = field(default_factory=list)


# --- inputs ----------------------------------------------------------------------------------------


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def scan_character_folders(root: str | Path | None, what: str, option: str, *,
                           min_images: int = 1, allow_background: bool = False,
                           generation: dict[str, Any] | None = None) -> dict[str, list[ImageItem]]:
    """Images of ``root/<character>/`` for every character folder, in sorted order.

    Folders whose names start with ``.`` or ``_`` are skipped (except ``_background`` where allowed).

    Args:
        root: the folder; ``what`` and ``option`` name it in messages (``"images"``, ``"--images"``).
        min_images: fewest images a character folder must hold.
        allow_background: also read ``root/_background/`` (character ``None`` in the items, key
            ``"_background"`` in the result).
        generation: the folder's generation log, to say in an error which prompts were blocked.

    Raises:
        InputError: ``root`` is missing or holds no character folder with images; a folder name is not
            a character name; a character has fewer than ``min_images`` images.
    """
    if root is None:
        raise InputError(f"{option} is required")
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{what} folder {root} ({option}) does not exist; give a folder with one sub-folder "
                         "of images per character (DIR/<character>/*.png)")
    result: dict[str, list[ImageItem]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        name = folder.name
        if name == BACKGROUND_FOLDER and allow_background:
            result[name] = [ImageItem(p, f"{name}/{p.name}", None) for p in _image_files(folder)]
            continue
        if name.startswith("_"):
            continue  # e.g. _background outside calibration, __MACOSX
        if not FOLDER_NAME.match(name):
            raise InputError(f"{what} folder {folder} ({option}) is not a character name (lower-case letters, "
                             "digits, '_' or '-'); rename it to the character's name from pipeline.yaml")
        files = _image_files(folder)
        if len(files) < min_images:
            blocked = ""
            if generation:
                rows = [r for r in generation["records"] if r.get("character") == name and r.get("status") != "ok"]
                if rows:
                    blocked = (f"; {len(rows)} request(s) for {name!r} were blocked or failed (see "
                               f"{root / GENERATION_LOG})")
            raise InputError(
                f"{what} folder {folder} ({option}) has {len(files)} image(s); at least {min_images} are needed "
                f"per character" + (" (a mean and a confidence interval over fewer images are meaningless)"
                                    if min_images > 1 else "") + blocked)
        result[name] = [ImageItem(p, f"{name}/{p.name}", name, parse_image_name(p.name)) for p in files]
    if not any(k != BACKGROUND_FOLDER and v for k, v in result.items()):
        loose = _image_files(root)
        hint = (f" ({len(loose)} image(s) lie directly in it: move them into {root}/<character>/)"
                if loose else "")
        raise InputError(f"{what} folder {root} ({option}) is empty: it has no <character>/ sub-folder with "
                         f"images{hint}")
    return result


def scan_training_crops(root: str | Path) -> list[ImageItem]:
    """Training crops for memorisation and (where their character is known) calibration.

    Layouts, tried in order: ``root/crops.jsonl`` (kept rows; ``path`` relative to ``root``),
    ``root/<character>/*``, or images directly in ``root`` (character unknown).

    Raises:
        InputError: ``root`` is missing, a manifest row points to a missing file, or no image is found.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"training crops folder {root} (--training-crops) does not exist")
    manifest = root / "crops.jsonl"
    items: list[ImageItem] = []
    if manifest.is_file():
        try:
            rows = read_jsonl(manifest)
        except ValueError as err:
            raise InputError(str(err)) from None
        for row in rows:
            if row.get("dropped_reason") or not row.get("path"):
                continue
            path = root / row["path"]
            if not path.is_file():
                raise InputError(f"{manifest}: crop {row.get('crop_id')} points to {path}, which does not exist")
            items.append(ImageItem(path, str(row["path"]), row.get("character")))
    else:
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            character = folder.name if FOLDER_NAME.match(folder.name) else None
            items += [ImageItem(p, f"{folder.name}/{p.name}", character) for p in _image_files(folder)]
        items += [ImageItem(p, p.name, None) for p in _image_files(root)]
    if not items:
        raise InputError(f"training crops folder {root} (--training-crops) has no image (and no crops.jsonl "
                         "with kept crops)")
    return items


def load_rgb(path: Path) -> np.ndarray:
    """Decode an image file to an ``(H, W, 3)`` uint8 RGB array.

    Raises:
        InputError: the file cannot be read or decoded; the message names it.
    """
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InputError(f"cannot read image {path}: {err}. Replace or remove the file") from None


def _embed(embedder: ImageEmbedder, items: Sequence[ImageItem], what: str) -> np.ndarray:
    images = [load_rgb(item.path) for item in items]
    if not images:
        return np.zeros((0, int(embedder.dimension)), dtype=np.float32)
    emb = np.asarray(embedder.embed_images(images), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(items):
        raise InputError(f"embedding backend {embedder.name} returned shape {emb.shape} for {len(items)} {what}")
    return emb


def _check_dimensions(sets: Mapping[str, np.ndarray]) -> int:
    dims = {name: int(arr.shape[1]) for name, arr in sets.items() if arr.size or arr.ndim == 2}
    distinct = sorted(set(dims.values()))
    if len(distinct) > 1:
        detail = ", ".join(f"{k}: {v}" for k, v in dims.items())
        raise InputError(f"mismatched embedding dimensions ({detail}); embed every image set with the same "
                         "embeddings backend and output length")
    return distinct[0]


# --- metrics ------------------------------------------------------------------------------------------


@dataclass
class _ModelData:
    name: str
    root: Path
    items: list[ImageItem]
    embeddings: np.ndarray
    similarity: np.ndarray  # (N, C) against the reference characters
    generation: dict[str, Any] | None
    prompts: list[str | None]


def _groups(values: np.ndarray, characters: Sequence[str]) -> dict[str, np.ndarray]:
    out: dict[str, list[float]] = {}
    for value, character in zip(values, characters, strict=True):
        out.setdefault(character, []).append(float(value))
    return {k: np.asarray(v) for k, v in out.items()}


class _Stats:
    """Bootstrap bookkeeping: one generator, shared settings."""

    def __init__(self, samples: int, confidence: float, seed: int) -> None:
        self.samples = samples
        self.confidence = confidence
        self.rng = np.random.default_rng(seed)

    def summary(self, groups: Mapping[str, np.ndarray]) -> tuple[dict[str, Any], np.ndarray] | None:
        groups = {k: v for k, v in groups.items() if len(v)}
        if not groups:
            return None
        overall, dist = M.estimate(groups, self.samples, self.confidence, self.rng)
        per = {k: M.estimate({k: v}, self.samples, self.confidence, self.rng)[0].to_json()
               for k, v in sorted(groups.items())}
        return {**overall.to_json(), "per_character": per}, dist


def _metric_entry(name: str, stats: _Stats, groups: Mapping[str, Mapping[str, np.ndarray] | None],
                  extra: Mapping[str, dict[str, Any]] | None = None) -> dict[str, Any]:
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
                  "improvement": None, "improvement_ci_low": None, "improvement_ci_high": None})
    if entry["finetuned"] is not None and entry["base"] is not None:
        fin = M.Estimate(entry["finetuned"]["mean"], 0, 0, entry["finetuned"]["n"])
        base = M.Estimate(entry["base"]["mean"], 0, 0, entry["base"]["n"])
        diff = M.difference((fin, dists["finetuned"]), (base, dists["base"]), stats.confidence)
        sign = 1.0 if info["higher_is_better"] else -1.0
        low, high = sorted((sign * diff.ci_low, sign * diff.ci_high))
        entry.update({"difference": round(diff.mean, 6), "difference_ci_low": round(diff.ci_low, 6),
                      "difference_ci_high": round(diff.ci_high, 6), "improvement": round(sign * diff.mean, 6),
                      "improvement_ci_low": round(low, 6), "improvement_ci_high": round(high, 6)})
    return entry


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


def _calibration(stats: _Stats, names: Sequence[str], ref_emb: Mapping[str, np.ndarray],
                 cal_items: Sequence[ImageItem] | None, cal_emb: np.ndarray | None, source: str,
                 warnings: list[str]) -> dict[str, Any]:
    ceiling: dict[str, np.ndarray] = {}
    floor: dict[str, np.ndarray] = {}
    if cal_items is not None and cal_emb is not None and len(cal_items):
        sim = M.reference_similarity(cal_emb, ref_emb)
        labels = [item.character for item in cal_items]
        for j, name in enumerate(names):
            own = np.array([lab == name for lab in labels])
            if own.any():
                ceiling[name] = sim[own, j]
            if (~own).any():
                floor[name] = sim[~own, j]
        missing = [n for n in names if n not in ceiling]
        if missing:
            warnings.append(f"calibration ({source}) has no real crop of {missing}: no ceiling for them")
    else:
        source = "references (leave-one-out)"
        for name in names:
            refs = ref_emb[name]
            if len(refs) >= 2:
                ceiling[name] = M.leave_one_out_similarity(refs)
            others = [ref_emb[o] for o in names if o != name]
            if others:
                floor[name] = M.reference_similarity(np.concatenate(others), {name: refs})[:, 0]
        if any(len(ref_emb[n]) < 2 for n in names):
            warnings.append("calibration from references: characters with a single reference have no ceiling; "
                            "give --calibration-crops (held-out real crops) for a real ceiling")
    out: dict[str, Any] = {"source": source}
    for key, groups in (("ceiling", ceiling), ("floor", floor)):
        summary = stats.summary(groups)
        out[key] = summary[0] if summary else None
    return out


def _calibrated(mean: float | None, calibration: dict[str, Any]) -> float | None:
    ceiling, floor = calibration.get("ceiling"), calibration.get("floor")
    if mean is None or not ceiling or not floor or ceiling["mean"] <= floor["mean"]:
        return None
    return round((mean - floor["mean"]) / (ceiling["mean"] - floor["mean"]), 6)


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


# --- orchestration ----------------------------------------------------------------------------------


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

    Raises:
        InputError: a missing or empty folder, a character with no references, fewer than 2 images for a
            character, an unreadable image, or mismatched embedding dimensions. All folder checks run
            before any image is embedded.
    """
    from pipeline.config import StoryboardConfig

    config = config or StoryboardConfig()
    settings = config.evaluation
    out_dir = Path(out_dir)
    warnings: list[str] = []

    # 1. Folders and layouts, before any expensive work.
    references = scan_character_folders(references_dir, "references", "--references")
    generations = {"finetuned": read_generation_log(images_dir) if Path(images_dir).is_dir() else None,
                   "base": read_generation_log(baseline_dir) if baseline_dir and Path(baseline_dir).is_dir()
                   else None}
    sets = {"finetuned": scan_character_folders(images_dir, "images", "--images",
                                                min_images=MIN_IMAGES_PER_CHARACTER,
                                                generation=generations["finetuned"])}
    if baseline_dir is not None:
        sets["base"] = scan_character_folders(baseline_dir, "baseline images", "--baseline-images",
                                              min_images=MIN_IMAGES_PER_CHARACTER, generation=generations["base"])
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
    training = scan_training_crops(training_crops_dir) if training_crops_dir is not None else None
    calibration = None
    if calibration_dir is not None:
        cal_folders = scan_character_folders(calibration_dir, "calibration crops", "--calibration-crops",
                                             allow_background=True)
        calibration = [item for items in cal_folders.values() for item in items]
        unknown = sorted({i.character for i in calibration if i.character and i.character not in references})
        if unknown:
            warnings.append(f"calibration crops of {unknown} have no references; they count towards the floor only")

    # 2. Embeddings.
    embedder = embedder or make_embedder(config.embeddings, config.aws)
    ref_emb = {name: _embed(embedder, references[name], f"references of {name}") for name in names}
    model_items = {m: [item for c in sorted(folders) for item in folders[c]] for m, folders in sets.items()}
    model_emb = {m: _embed(embedder, items, f"{m} images") for m, items in model_items.items()}
    training_emb = _embed(embedder, training, "training crops") if training else None
    cal_emb = _embed(embedder, calibration, "calibration crops") if calibration else None
    all_sets = {f"references/{k}": v for k, v in ref_emb.items()}
    all_sets.update({f"{k} images": v for k, v in model_emb.items()})
    if training_emb is not None:
        all_sets["training crops"] = training_emb
    if cal_emb is not None:
        all_sets["calibration crops"] = cal_emb
    dimension = _check_dimensions(all_sets)
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
    stats = _Stats(settings.bootstrap_samples, settings.confidence_level, settings.random_seed)
    col = {n: j for j, n in enumerate(names)}
    per_image: dict[str, dict[str, np.ndarray | list]] = {}
    groups: dict[str, dict[str, dict[str, np.ndarray] | None]] = {k: {} for k in METRIC_INFO}
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
                _check_dimensions({"prompt texts": text_emb, f"{model} images": d.embeddings})
                fidelity[known] = M.paired_cosine(text_emb, d.embeddings[known])
        memo = (M.max_similarity(d.embeddings, training_emb) if training_emb is not None and len(training_emb)
                else np.full(len(intended), np.nan))
        per_image[model] = {"own": own, "predicted": predicted, "fidelity": fidelity, "memo": memo}
        groups["character_similarity"][model] = _groups(own, intended)
        groups["identity_accuracy"][model] = _groups(correct, intended) if len(names) >= 2 else None
        ok = ~np.isnan(fidelity)
        groups["prompt_fidelity"][model] = (_groups(fidelity[ok], [c for c, k in zip(intended, ok, strict=True)
                                                                   if k]) if ok.any() else None)
        if training_emb is not None:
            groups["memorisation"][model] = _groups(memo, intended)
            extra_memo[model] = {"near_copy_rate": round(float(np.mean(memo >= settings.memorisation_threshold)), 6),
                                 "threshold": settings.memorisation_threshold}
        else:
            groups["memorisation"][model] = None
        diversity: dict[str, list[float]] = {}
        by_prompt: dict[tuple[str, Any], list[int]] = {}
        for i, item in enumerate(d.items):
            key = (item.character, item.meta["prompt_index"] if item.meta else None)
            by_prompt.setdefault(key, []).append(i)
        for (character, _), idx in by_prompt.items():
            if len(idx) >= 2:
                diversity.setdefault(character, []).append(M.pairwise_diversity(d.embeddings[idx]))
        groups["diversity"][model] = {k: np.asarray(v) for k, v in diversity.items()} or None
        separation[model] = M.separation_auc(d.similarity, intended, names)
    if text_embedder is None:
        warnings.append(f"prompt fidelity needs an encoder of texts and images ({embedder.name} embeds images "
                        "only); use embeddings.backend: titan")
    if training_emb is None:
        warnings.append("memorisation needs --training-crops")

    metric_entries = {name: _metric_entry(name, stats, groups[name], extra_memo if name == "memorisation" else None)
                      for name in METRIC_INFO}
    cal_source = "held-out real crops" if calibration else None
    cal_items, cal_e = calibration, cal_emb
    if calibration is None and training is not None and any(i.character in references for i in training):
        cal_source = "training crops"
        keep = [k for k, i in enumerate(training) if i.character is not None]
        cal_items = [training[k] for k in keep]
        cal_e = training_emb[keep] if training_emb is not None else None
    calibration_out = _calibration(stats, names, ref_emb, cal_items, cal_e, cal_source or "", warnings)
    cs = metric_entries["character_similarity"]
    for model in MODELS:
        if cs[model] is not None:
            cs[model]["calibrated"] = _calibrated(cs[model]["mean"], calibration_out)

    # 4. Gate.
    reasons: list[str] = []
    fin_mean = cs["finetuned"]["mean"]
    if fin_mean < settings.min_character_similarity:
        reasons.append(f"fine-tuned character similarity {fin_mean:.3f} is below min_character_similarity "
                       f"{settings.min_character_similarity:.3f}")
    if cs["improvement"] is not None and cs["improvement"] < settings.min_improvement:
        reasons.append(f"improvement over the base model {cs['improvement']:+.3f} is below min_improvement "
                       f"{settings.min_improvement:+.3f}")
    if cs["improvement"] is None:
        warnings.append("no --baseline-images: the improvement over the base model is not measured")
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
                     "memorisation_threshold": settings.memorisation_threshold},
        "metrics": metric_entries,
        "separation_auc": {m: (None if separation[m] is None else round(separation[m], 6)) for m in MODELS},
        "calibration": calibration_out,
        "gate": {"passed": not reasons, "min_character_similarity": settings.min_character_similarity,
                 "min_improvement": settings.min_improvement, "reasons": reasons},
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
    log.info("evaluation: character similarity %.3f (fine-tuned)%s; gate %s; wrote %s and %s", fin_mean,
             "" if cs["base"] is None else f" vs {cs['base']['mean']:.3f} (base)",
             "passed" if not reasons else "failed", evaluation_path, report_path)
    return EvaluationResult(evaluation, evaluation_path, report_path, not reasons, warnings)


def load_schema() -> dict[str, Any]:
    """The JSON Schema of ``evaluation.json`` (``evaluation/schemas/evaluation.schema.json``)."""
    import json

    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate_evaluation(document: Mapping[str, Any]) -> None:
    """Validate an ``evaluation.json`` document against its JSON Schema (Draft 2020-12).

    Raises:
        ValueError: the document breaks the schema; the message gives the JSON path and the problem.
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  - {'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors[:10]]
        raise ValueError("evaluation.json does not match its schema:\n" + "\n".join(lines))
