"""Calibration (evaluation.calibration) and its gate criterion (evaluation.gate): AUCs on known embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluation.calibration import calibrate, held_out_training, one_vs_rest_auc
from evaluation.evaluate import decide_gate
from evaluation.inputs import ImageItem
from evaluation.report import calibration_png


def _unit(rows) -> np.ndarray:
    a = np.asarray(rows, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _summary(groups):
    values = [v for v in groups.values() if len(v)]
    if not values:
        return None
    mean = float(np.mean([np.mean(v) for v in values]))
    return {"mean": mean, "ci_low": mean, "ci_high": mean, "n": sum(len(v) for v in values), "few_images": False,
            "per_character": {}}, None


REFS = {"red": _unit([[1, 0, 0], [0.9, 0.1, 0]]), "blue": _unit([[0, 1, 0], [0.1, 0.9, 0]])}


def _items(labels):
    return [ImageItem(Path(f"{k}.png"), f"{k}.png", label) for k, label in enumerate(labels)]


def test_one_vs_rest_auc_orders_positives_above_negatives():
    assert one_vs_rest_auc(np.array([0.9, 0.8]), np.array([0.1, 0.2, 0.3])) == 1.0
    assert one_vs_rest_auc(np.array([0.1]), np.array([0.9])) == 0.0
    assert one_vs_rest_auc(np.array([0.5, 0.2]), np.array([0.3, 0.1])) == 0.75
    assert one_vs_rest_auc(np.array([0.5]), np.array([])) is None


def test_separable_encoder_is_measured_and_passes_the_criterion():
    emb = _unit([[1, 0.1, 0], [0.95, 0, 0.2], [0, 1, 0.1], [0.1, 0.9, 0], [0, 0, 1], [0.2, 0.2, 1]])
    warnings: list[str] = []
    out = calibrate(["blue", "red"], REFS, _items(["red", "red", "blue", "blue", None, None]), emb,
                    "held-out real crops", _summary, 0.9, warnings)
    assert out["held_out"] and out["separable"] is True and out["advice"] is None
    assert out["per_character"]["red"]["auc"] == out["per_character"]["blue"]["auc"] == out["auc"] == 1.0
    red = out["per_character"]["red"]
    assert red["real"]["n"] == 2 and red["other_characters"]["n"] == 2 and red["background"]["n"] == 2
    assert red["real"]["min"] > red["background"]["max"]
    gate = decide_gate(character_similarity=0.8, improvement=0.1, base_similarity=0.7, near_copy_rate=0.0,
                       min_character_similarity=0.7, min_improvement=0.02, max_near_copy_rate=0.2,
                       calibration_auc=out["auc"], min_calibration_auc=0.9)
    assert gate["status"] == "passed" and gate["min_calibration_auc"] == 0.9


def test_encoder_that_confuses_a_character_with_the_background_makes_the_gate_inconclusive():
    # red's real crops score no higher against red's references than the background windows do
    emb = _unit([[0.5, 0, 1], [0.6, 0.1, 1], [0, 1, 0], [0.1, 0.9, 0], [0.7, 0, 1], [0.55, 0, 1]])
    warnings: list[str] = []
    out = calibrate(["blue", "red"], REFS, _items(["red", "red", "blue", "blue", None, None]), emb,
                    "held-out real crops", _summary, 0.9, warnings)
    assert out["per_character"]["red"]["auc"] < 0.9 and out["per_character"]["blue"]["auc"] == 1.0
    assert out["separable"] is False and out["auc"] == out["per_character"]["red"]["auc"]
    assert "['red']" in out["advice"] and "titan" in out["advice"] and "ONNX" in out["advice"].upper()
    assert any("calibration:" in w for w in warnings)
    # a model that would fail on similarity is neither failed nor passed by an encoder that cannot tell
    gate = decide_gate(character_similarity=0.5, improvement=0.1, base_similarity=0.4, near_copy_rate=0.0,
                       min_character_similarity=0.7, min_improvement=0.02, max_near_copy_rate=0.2,
                       calibration_auc=out["auc"], calibration_auc_per_character={"red": 0.5, "blue": 1.0},
                       min_calibration_auc=0.9)
    assert gate["status"] == "inconclusive" and not gate["passed"]
    assert "cannot tell the characters apart" in gate["summary"]
    criterion = gate["criteria"][-1]
    assert criterion["name"] == "calibration_auc" and criterion["verdict"] == "not_met"
    assert "Titan" in criterion["sentence"] and criterion["per_character"] == {"blue": 1.0, "red": 0.5}


def test_references_only_give_a_band_but_no_auc_so_the_gate_is_inconclusive():
    warnings: list[str] = []
    out = calibrate(["blue", "red"], REFS, None, None, "held-out real crops", _summary, 0.9, warnings)
    assert out["source"] == "references (leave-one-out)" and not out["held_out"]
    assert out["auc"] is None and out["separable"] is None and out["ceiling"] is not None
    gate = decide_gate(character_similarity=0.8, improvement=0.1, base_similarity=0.7, near_copy_rate=0.0,
                       min_character_similarity=0.7, min_improvement=0.02, max_near_copy_rate=0.2,
                       calibration_auc=None, min_calibration_auc=0.9)
    assert gate["status"] == "inconclusive" and gate["criteria"][-1]["verdict"] == "not_measured"
    assert "--calibration-crops" in gate["reasons"][0]


def test_gate_without_the_calibration_criterion_is_unchanged():
    gate = decide_gate(character_similarity=0.8, improvement=0.1, base_similarity=0.7, near_copy_rate=0.0,
                       min_character_similarity=0.7, min_improvement=0.02, max_near_copy_rate=0.2)
    assert gate["status"] == "passed" and gate["min_calibration_auc"] is None
    assert [c["name"] for c in gate["criteria"]] == ["character_similarity", "improvement_over_base",
                                                     "near_copy_rate"]


def test_training_crops_that_copy_a_reference_are_not_held_out():
    emb = _unit([[1, 0, 0], [0.7, 0.3, 0.3], [0, 1, 0], [0.5, 0.5, 0.5]])
    items = _items(["red", "red", "blue", None])
    kept, kept_emb, excluded = held_out_training(items, emb, REFS, 0.95)
    assert excluded == 2  # the exact copies of a red and a blue reference
    assert [i.rel for i in kept] == ["1.png"] and kept_emb.shape == (1, 3)  # unknown character: left out


def test_calibration_plot_is_a_png_and_absent_without_values():
    emb = _unit([[1, 0.1, 0], [0, 1, 0.1], [0, 0, 1]])
    out = calibrate(["blue", "red"], REFS, _items(["red", "blue", None]), emb, "held-out real crops", _summary,
                    0.9, [])
    png = calibration_png(out)
    assert png is not None and png.startswith(b"\x89PNG")
    assert calibration_png({"per_character": {}}) is None


def test_schema_requires_the_calibration_fields():
    """The schema requires the new fields and validates a calibration block as calibrate writes it."""
    import jsonschema

    from evaluation.schema import load_schema

    schema = load_schema()
    assert {"per_character", "auc", "separable", "advice", "held_out"} <= set(
        schema["properties"]["calibration"]["required"])
    emb = _unit([[1, 0.1, 0], [0, 1, 0.1], [0, 0, 1]])
    block = calibrate(["blue", "red"], REFS, _items(["red", "blue", None]), emb, "held-out real crops",
                      lambda g: None, 0.9, [])
    sub = {**schema["properties"]["calibration"], "$defs": schema["$defs"]}
    jsonschema.validate(block, sub)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({k: v for k, v in block.items() if k != "auc"}, sub)
