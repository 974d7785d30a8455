"""``report.html``: one self-contained page a reviewer reads in a minute.

Contents: a banner when the base model is the untrained random-weight stand-in (its figures test the machinery,
not the quality); the gate's status (PASS, FAIL or INCONCLUSIVE) with its reasons and every criterion's figure
and threshold; the memorisation criterion (near-copy rate) per character; intervals over fewer than
``min_images_per_character`` images marked with a dagger; the evaluated model (backend, base, LoRA artifact,
training steps and loss, the training loss curve); a table and a bar chart (matplotlib, Agg, embedded as PNG) of
every metric for the base and the fine-tuned model with their bootstrap intervals and the calibration band;
then, per character, the reference images and the base and fine-tuned images of the same prompt and seed side by
side, each captioned with its scores. Every image is embedded as a ``data:`` URI (JPEG thumbnails), so the file
opens the same from disk or from S3.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from jinja2 import Environment, FileSystemLoader, select_autoescape
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from evaluation.prompt_set import parse_image_name

if TYPE_CHECKING:
    from core.evaluation_config import EvaluationConfig
    from evaluation.evaluate import ImageItem

TEMPLATES = Path(__file__).resolve().parent / "templates"
METRIC_LABELS = {
    "character_similarity": "Character similarity",
    "identity_accuracy": "Identity accuracy",
    "prompt_fidelity": "Prompt fidelity",
    "diversity": "Diversity",
    "memorisation": "Memorisation (lower is better)",
}
BASE_COLOUR = "#9aa5b1"
FINETUNED_COLOUR = "#1f6feb"
BAND_COLOUR = "#2da44e"


def thumbnail_uri(path: Path, max_px: int) -> str:
    """A ``data:image/jpeg;base64,...`` thumbnail of the image at ``path`` (longer side ``max_px``);
    an empty string when the file cannot be read (the report still renders)."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            img.save(buffer, format="JPEG", quality=82)
    except OSError:
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _error_bars(summaries: Sequence[dict[str, Any] | None]) -> np.ndarray:
    low, high = [], []
    for s in summaries:
        if s is None:
            low.append(0.0)
            high.append(0.0)
        else:
            low.append(max(s["mean"] - s["ci_low"], 0.0))
            high.append(max(s["ci_high"] - s["mean"], 0.0))
    return np.array([low, high])


def metrics_chart_png(evaluation: Mapping[str, Any]) -> bytes:
    """Bar chart of the metrics (left) and of character similarity per character (right), base versus
    fine-tuned, with bootstrap intervals as error bars and the calibration band (floor to ceiling) shaded
    behind the character similarity bars. Rendered with matplotlib's Agg canvas; returns PNG bytes."""
    metrics = evaluation["metrics"]
    names = [k for k in METRIC_LABELS if metrics[k]["finetuned"] is not None or metrics[k]["base"] is not None]
    characters = evaluation["characters"]
    calibration = evaluation["calibration"]
    has_base = evaluation["models"]["base"] is not None

    fig = Figure(figsize=(12, 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, width_ratios=[max(len(names), 2), max(len(characters), 2)])
    width = 0.38
    series = [("base", BASE_COLOUR, -width / 2), ("finetuned", FINETUNED_COLOUR, width / 2)] if has_base \
        else [("finetuned", FINETUNED_COLOUR, 0.0)]

    x = np.arange(len(names))
    ceiling, floor = calibration.get("ceiling"), calibration.get("floor")
    if ceiling and floor and "character_similarity" in names:
        j = names.index("character_similarity")
        left.fill_between([j - 0.5, j + 0.5], floor["mean"], ceiling["mean"], color=BAND_COLOUR, alpha=0.15,
                          label="real-data band (floor to ceiling)", zorder=0)
    for model, colour, offset in series:
        summaries = [metrics[k][model] for k in names]
        values = [s["mean"] if s else 0.0 for s in summaries]
        bars = left.bar(x + offset, values, width, color=colour, label="fine-tuned" if model == "finetuned" else "base",
                        yerr=_error_bars(summaries), capsize=4, zorder=2)
        for bar, s in zip(bars, summaries, strict=True):
            if s is not None:
                left.annotate(f"{s['mean']:.2f}", (bar.get_x() + bar.get_width() / 2, s["ci_high"]),
                              xytext=(0, 3), textcoords="offset points", ha="center", fontsize=8)
    threshold = evaluation["gate"]["min_character_similarity"]
    if "character_similarity" in names:
        j = names.index("character_similarity")
        left.hlines(threshold, j - 0.5, j + 0.5, colors="#cf222e", linestyles="--", label="gate threshold", zorder=3)
    left.set_xticks(x, [METRIC_LABELS[k].replace(" (", "\n(") for k in names], fontsize=9)
    left.set_ylim(0, 1.25)
    left.set_ylabel("score (mean with 95% interval)" if evaluation["settings"]["confidence_level"] == 0.95
                    else "score (mean with bootstrap interval)")
    left.set_title("Metrics, base vs fine-tuned")
    left.legend(fontsize=8, loc="upper center", ncol=4, frameon=False)
    left.grid(axis="y", alpha=0.3)

    xc = np.arange(len(characters))
    cs = metrics["character_similarity"]
    for k, character in enumerate(characters):
        c_ceiling = (ceiling or {}).get("per_character", {}).get(character)
        c_floor = (floor or {}).get("per_character", {}).get(character)
        if c_ceiling and c_floor:
            right.fill_between([k - 0.5, k + 0.5], c_floor["mean"], c_ceiling["mean"], color=BAND_COLOUR, alpha=0.15,
                               zorder=0, label="real-data band" if k == 0 else None)
    for model, colour, offset in series:
        per = (cs[model] or {}).get("per_character", {})
        summaries = [per.get(c) for c in characters]
        values = [s["mean"] if s else 0.0 for s in summaries]
        right.bar(xc + offset, values, width, color=colour, yerr=_error_bars(summaries), capsize=4, zorder=2,
                  label="fine-tuned" if model == "finetuned" else "base")
    right.axhline(threshold, color="#cf222e", linestyle="--", linewidth=1)
    right.set_xticks(xc, characters)
    lows = [s["ci_low"] for m in ("base", "finetuned") if cs.get(m) for s in cs[m]["per_character"].values()]
    if floor:
        lows += [s["mean"] for s in floor["per_character"].values()]
    bottom = max(0.0, min(lows + [threshold]) - 0.1) if lows else 0.0
    right.set_ylim(round(bottom, 1), 1.08)
    right.set_title("Character similarity per character")
    right.legend(fontsize=8, loc="upper center", ncol=3, frameon=False)
    right.grid(axis="y", alpha=0.3)

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def loss_curve_png(rows: Sequence[Mapping[str, Any]], stand_in: bool = False) -> bytes:
    """Training loss against the optimisation step (``training_log.jsonl`` rows: ``step``, ``loss``), with a
    moving average over about a twentieth of the logged steps (at least 5) once there are 10 or more; the
    title says so when the base is the random-weight stand-in. Rendered with matplotlib's Agg canvas; returns
    PNG bytes.

    Raises:
        ValueError: no row has a numeric ``step`` and ``loss``.
    """
    points = sorted((float(r["step"]), float(r["loss"])) for r in rows
                    if isinstance(r.get("step"), (int, float)) and isinstance(r.get("loss"), (int, float))
                    and np.isfinite(r["loss"]))
    if not points:
        raise ValueError("the training log has no row with a numeric step and loss")
    steps, losses = np.array(points).T
    fig = Figure(figsize=(8, 3.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot(steps, losses, color=FINETUNED_COLOUR, alpha=0.35 if len(points) >= 10 else 1.0, linewidth=1,
            marker="o" if len(points) < 10 else None, markersize=3, label="loss per logged step")
    if len(points) >= 10:
        window = max(5, len(points) // 20)
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, color=FINETUNED_COLOUR, linewidth=2, label=f"mean of {window} steps")
    ax.set_xlabel("optimisation step")
    ax.set_ylabel("training loss (MSE of the noise prediction)")
    ax.set_title("Training loss" + (" (stand-in base with random weights: tests the machinery, not the quality)"
                                    if stand_in else ""), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


FEW_IMAGES_MARK = "†"  # an interval over fewer than settings.min_images_per_character values per character


CALIBRATION_GROUPS = (("real", "real crops", "#2da44e"), ("other_characters", "other characters", "#cf222e"),
                      ("background", "background", "#8c959f"))


def calibration_png(calibration: Mapping[str, Any]) -> bytes | None:
    """A small strip chart of the calibration: per character, the similarity to its references of its real crops,
    of the other characters' crops and of background windows, with the one-vs-rest AUC in the label. Rendered
    with matplotlib's Agg canvas; PNG bytes, or ``None`` when no group has values."""
    per = calibration.get("per_character") or {}
    names = [n for n, e in sorted(per.items()) if any(e.get(k) for k, _, _ in CALIBRATION_GROUPS)]
    if not names:
        return None
    fig = Figure(figsize=(6.4, 0.5 + 0.9 * len(names)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    rng = np.random.default_rng(0)
    for row, name in enumerate(names):
        for k, (key, label, colour) in enumerate(CALIBRATION_GROUPS):
            dist = per[name].get(key)
            if not dist:
                continue
            y = row + (k - 1) * 0.25 + rng.uniform(-0.06, 0.06, size=len(dist["values"]))
            ax.scatter(dist["values"], y, s=12, color=colour, alpha=0.7, label=label if row == 0 else None)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels([f"{n}\nAUC {per[n]['auc']:.3f}" if per[n].get("auc") is not None else f"{n}\nAUC n/a"
                        for n in names])
    ax.set_xlabel("cosine similarity to the character's references")
    ax.invert_yaxis()
    ax.legend(loc="lower left", fontsize=8, ncols=3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _fmt(summary: Mapping[str, Any] | None) -> str:
    if not summary:
        return "n/a"
    mark = f" {FEW_IMAGES_MARK}" if summary.get("few_images") else ""
    return f"{summary['mean']:.3f} [{summary['ci_low']:.3f}, {summary['ci_high']:.3f}]{mark}"


def _fmt_improvement(entry: Mapping[str, Any]) -> str:
    if entry.get("improvement") is None:
        return "n/a"
    return f"{entry['improvement']:+.3f} [{entry['improvement_ci_low']:+.3f}, {entry['improvement_ci_high']:+.3f}]"


def _caption(record: Mapping[str, Any]) -> dict[str, Any]:
    others = ", ".join(f"{c} {v:.2f}" for c, v in sorted(record["similarity"].items(), key=lambda kv: -kv[1])
                       if c != record["character"])
    return {
        "similarity": f"{record['character_similarity']:.3f}",
        "predicted": record["predicted_character"],
        "correct": record["predicted_character"] == record["character"],
        "others": others,
        "fidelity": None if record["prompt_fidelity"] is None else f"{record['prompt_fidelity']:.3f}",
        "memo": None if record["max_training_similarity"] is None else f"{record['max_training_similarity']:.3f}",
        "name": record["path"].split("/", 1)[-1],
    }


def _sort_key(record: Mapping[str, Any]) -> tuple:
    return (record["prompt_index"] if record["prompt_index"] is not None else 10**9,
            record["seed"] if record["seed"] is not None else 10**12, record["path"])


def _pair(record: Mapping[str, Any], finetuned: Mapping[str, Any] | None, base: Mapping[str, Any] | None,
          image_roots: Mapping[str, Path], px: int) -> dict[str, Any]:
    meta = parse_image_name(record["path"].split("/", 1)[-1]) or {}
    return {
        "prompt": record["prompt"], "prompt_index": record["prompt_index"], "seed": record["seed"],
        "index": meta.get("index"),
        "finetuned": None if finetuned is None else
        {**_caption(finetuned), "uri": thumbnail_uri(image_roots["finetuned"] / finetuned["path"], px)},
        "base": None if base is None else
        {**_caption(base), "uri": thumbnail_uri(image_roots["base"] / base["path"], px)},
    }


def render_report(evaluation: Mapping[str, Any], *, references: Mapping[str, Sequence[ImageItem]],
                  image_roots: Mapping[str, Path], settings: EvaluationConfig, loss_curve: bytes | None = None) -> str:
    """Render ``report.html`` from an ``evaluation.json`` document.

    Args:
        evaluation: the document (see ``evaluation/schemas/evaluation.schema.json``).
        references: reference images per character (thumbnails are embedded).
        image_roots: the image folder of each model (``finetuned``, ``base``); image paths in the
            document are relative to them.
        settings: ``thumbnail_px`` and ``max_images_per_character_in_report``.
        loss_curve: the training loss curve PNG (:func:`loss_curve_png`), embedded in the model section.

    Returns:
        The HTML text (UTF-8, self-contained).
    """
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    template = env.get_template("report.html")
    metrics = evaluation["metrics"]
    rows = [{"label": METRIC_LABELS[k], "description": metrics[k]["description"], "base": _fmt(metrics[k]["base"]),
             "finetuned": _fmt(metrics[k]["finetuned"]), "improvement": _fmt_improvement(metrics[k]),
             "better": (metrics[k]["improvement_ci_low"] or 0) > 0,
             "worse": (metrics[k]["improvement_ci_high"] or 0) < 0}
            for k in METRIC_LABELS]
    px = settings.thumbnail_px
    calibration = evaluation["calibration"]
    by_model: dict[str, dict[str, dict[str, Any]]] = {}
    for record in evaluation["images"]:
        by_model.setdefault(record["model"], {})[record["path"]] = record
    has_base = evaluation["models"]["base"] is not None
    sections = []
    cs = metrics["character_similarity"]
    for character in evaluation["characters"]:
        fin = sorted((r for r in by_model.get("finetuned", {}).values() if r["character"] == character), key=_sort_key)
        base = by_model.get("base", {})
        pairs = []
        used_base = {base[r["path"]]["path"] for r in fin if r["path"] in base}  # base images with a partner
        for record in fin[:settings.max_images_per_character_in_report]:
            pairs.append(_pair(record, record, base.get(record["path"]), image_roots, px))
        unpaired = sorted((r for r in base.values() if r["character"] == character and r["path"] not in used_base),
                          key=_sort_key)
        room = max(settings.max_images_per_character_in_report - len(pairs), 0)
        pairs += [_pair(partner, None, partner, image_roots, px) for partner in unpaired[:room]]
        groups: list[dict[str, Any]] = []
        for pair in sorted(pairs, key=lambda q: (q["prompt_index"] is None, q["prompt_index"] or 0)):
            if not groups or groups[-1]["prompt_index"] != pair["prompt_index"]:
                groups.append({"prompt_index": pair["prompt_index"], "prompt": pair["prompt"], "pairs": []})
            groups[-1]["pairs"].append(pair)
        shown = len(pairs)
        total = len(fin) + len(unpaired)
        per = {m: (cs[m] or {}).get("per_character", {}).get(character) for m in ("finetuned", "base")}
        sections.append({
            "name": character,
            "references": [thumbnail_uri(item.path, px) for item in references.get(character, [])],
            "groups": groups,
            "shown": shown,
            "total": total,
            "finetuned": _fmt(per["finetuned"]),
            "base": _fmt(per["base"]),
            "ceiling": _fmt((calibration.get("ceiling") or {}).get("per_character", {}).get(character)),
            "floor": _fmt((calibration.get("floor") or {}).get("per_character", {}).get(character)),
        })
    memo = metrics["memorisation"]
    memorisation_rows = []
    for character in evaluation["characters"]:
        rates = {m: ((memo[m] or {}).get("near_copy_rate_per_character") or {}).get(character) for m in ("finetuned",
                                                                                                       "base")}
        memorisation_rows.append({"name": character, "finetuned": rates["finetuned"], "base": rates["base"],
                                  "over": rates["finetuned"] is not None
                                  and rates["finetuned"] > evaluation["gate"]["max_near_copy_rate"]})
    few_images = any((metrics[k][m] or {}).get("few_images") for k in METRIC_LABELS for m in ("finetuned", "base"))
    problems = []
    for model in ("finetuned", "base"):
        info = evaluation["models"][model]
        if info and info["generation"]:
            problems += [{"model": model, **p} for p in info["generation"]["problems"]]
    chart = base64.b64encode(metrics_chart_png(evaluation)).decode("ascii")
    cal_png = calibration_png(calibration)
    return template.render(
        evaluation=evaluation, rows=rows, sections=sections, chart_uri=f"data:image/png;base64,{chart}",
        has_base=has_base, gate=evaluation["gate"], calibration=calibration,
        memorisation_rows=memorisation_rows, memorisation_measured=memo["finetuned"] is not None,
        few_images=few_images, few_images_mark=FEW_IMAGES_MARK,
        min_images=evaluation["settings"]["min_images_per_character"],
        ceiling=_fmt(calibration.get("ceiling")), floor=_fmt(calibration.get("floor")),
        headline_finetuned=_fmt(cs["finetuned"]), headline_base=_fmt(cs["base"]),
        headline_improvement=_fmt_improvement(cs), problems=problems,
        confidence=int(round(evaluation["settings"]["confidence_level"] * 100)),
        calibrated={m: (cs[m] or {}).get("calibrated") for m in ("finetuned", "base")},
        calibration_uri=("data:image/png;base64," + base64.b64encode(cal_png).decode("ascii")) if cal_png else None,
        model=evaluation.get("model"),
        loss_curve_uri=("data:image/png;base64," + base64.b64encode(loss_curve).decode("ascii")) if loss_curve
        else None,
    )
