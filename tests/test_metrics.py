"""Evaluation metrics (DESIGN §7) on hand-made embeddings, and the Evaluate step end to end on synthetic
images: evaluation.json against its JSON Schema, bad input, prompt fidelity with a Stubber-checked Titan
client, and the ``storyboard evaluate`` command."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import boto3
import jsonschema
import numpy as np
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber
from PIL import Image

from core.config import parse_config
from core.embeddings import ColorTextureDescriptor
from core.errors import InputError
from evaluation import evaluate as evaluate_module
from evaluation import metrics as M
from evaluation.evaluate import run_evaluation
from evaluation.generation import GENERATION_LOG
from evaluation.schema import SCHEMA_PATH, load_schema, validate_evaluation
from pipeline.commands import evaluate as evaluate_command

# --- metrics on hand-made embeddings ----------------------------------------------------------------------


def _unit(*rows) -> np.ndarray:
    a = np.asarray(rows, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_reference_similarity_prediction_and_separation():
    refs = {"a": _unit([1, 0, 0], [0.9, 0.1, 0]), "b": _unit([0, 1, 0])}
    images = _unit([1, 0, 0], [0, 1, 0], [0.6, 0.8, 0])
    sim = M.reference_similarity(images, refs)
    assert sim.shape == (3, 2)
    expected_a0 = (1.0 + 0.9 / np.hypot(0.9, 0.1)) / 2
    assert sim[0, 0] == pytest.approx(expected_a0, abs=1e-6) and sim[1, 1] == pytest.approx(1.0)
    assert M.predicted_characters(sim, ["a", "b"]) == ["a", "b", "b"]
    assert M.separation_auc(sim, ["a", "b", "b"], ["a", "b"]) == pytest.approx(1.0)
    # The third image labelled "a" is closer to "b": separation drops below 1.
    assert M.separation_auc(sim, ["a", "b", "a"], ["a", "b"]) < 1.0
    assert M.separation_auc(sim[:, :1], ["a", "a", "a"], ["a"]) is None
    with pytest.raises(ValueError, match="dimensions differ"):
        M.reference_similarity(images, {"a": np.ones((1, 4), np.float32)})


def test_diversity_memorisation_and_leave_one_out():
    same = _unit([1, 0], [1, 0], [1, 0])
    assert M.pairwise_diversity(same) == pytest.approx(0.0, abs=1e-6)
    assert M.pairwise_diversity(_unit([1, 0], [0, 1])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2"):
        M.pairwise_diversity(_unit([1, 0]))
    memo = M.max_similarity(_unit([1, 0], [0, 1]), _unit([1, 0], [0.6, 0.8]))
    assert memo == pytest.approx([1.0, 0.8])
    loo = M.leave_one_out_similarity(_unit([1, 0], [1, 0], [0, 1]))
    assert loo == pytest.approx([0.5, 0.5, 0.0])
    assert M.paired_cosine(_unit([1, 0], [0, 1]), _unit([0.6, 0.8], [0.6, 0.8])) == pytest.approx([0.6, 0.8])


def test_bootstrap_interval_is_stratified_and_macro_averaged():
    rng = np.random.default_rng(1)
    groups = {"small": np.array([0.2, 0.4]), "large": rng.normal(0.8, 0.05, size=200)}
    est, dist = M.estimate(groups, samples=2000, confidence=0.95, rng=np.random.default_rng(0))
    # Macro mean weighs characters equally: (0.3 + ~0.8) / 2, not the image-weighted ~0.795.
    assert est.mean == pytest.approx((0.3 + groups["large"].mean()) / 2)
    assert est.ci_low < est.mean < est.ci_high and est.n == 202
    assert dist.shape == (2000,)
    wide, _ = M.estimate({"x": rng.normal(0, 1, 10)}, 2000, 0.95, np.random.default_rng(0))
    narrow, _ = M.estimate({"x": rng.normal(0, 1, 1000)}, 2000, 0.95, np.random.default_rng(0))
    assert (narrow.ci_high - narrow.ci_low) < (wide.ci_high - wide.ci_low) / 3
    low90, high90 = M.interval(dist, 0.90)
    assert est.ci_low <= low90 and high90 <= est.ci_high


def test_difference_interval_excludes_zero_only_for_a_real_gap():
    rng = np.random.default_rng(2)

    def est(values):
        return M.estimate({"c": values}, 2000, 0.95, rng)

    better = M.difference(est(rng.normal(0.8, 0.02, 40)), est(rng.normal(0.6, 0.02, 40)), 0.95)
    assert better.mean == pytest.approx(0.2, abs=0.02) and better.ci_low > 0
    same = M.difference(est(rng.normal(0.7, 0.05, 40)), est(rng.normal(0.7, 0.05, 40)), 0.95)
    assert same.ci_low < 0 < same.ci_high


# --- synthetic image sets -------------------------------------------------------------------------------

COLOURS = {"ruby": (200, 30, 40), "cobalt": (30, 60, 210)}


def _character_image(colour, rng, size=96) -> Image.Image:
    """A character: a coloured disc with a stripe on a light background, jittered position and noise."""
    img = np.full((size, size, 3), 225, np.uint8)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = size // 2 + rng.integers(-8, 9, 2)
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 < (size // 3) ** 2
    img[disc] = colour
    img[cy - 3:cy + 3, :] = (20, 20, 20)
    noise = rng.integers(-12, 13, img.shape)
    return Image.fromarray(np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8))


def _scene_image(rng, size=96) -> Image.Image:
    """A base-model image that misses the character: a green-brown landscape."""
    img = np.zeros((size, size, 3), np.uint8)
    img[: size // 2] = (120, 170, 230)
    img[size // 2:] = (60, 140, 50)
    noise = rng.integers(-20, 21, img.shape)
    return Image.fromarray(np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8))


def _write_sets(root: Path, n_images: int = 4, seed: int = 0) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    paths = {k: root / k for k in ("refs", "finetuned", "base", "crops")}
    for character, colour in COLOURS.items():
        for k in range(3):
            (paths["refs"] / character).mkdir(parents=True, exist_ok=True)
            _character_image(colour, rng).save(paths["refs"] / character / f"ref{k}.png")
        for k in range(n_images):
            name = f"{character}_p{k % 2}_s{k // 2}_0.png"
            for model, make in (("finetuned", lambda c=colour: _character_image(c, rng)),
                                ("base", lambda: _scene_image(rng))):
                (paths[model] / character).mkdir(parents=True, exist_ok=True)
                make().save(paths[model] / character / name)
        (paths["crops"] / character).mkdir(parents=True, exist_ok=True)
        for k in range(3):
            _character_image(colour, rng).save(paths["crops"] / character / f"crop{k}.jpg")
    return paths


@pytest.fixture
def sets(tmp_path) -> dict[str, Path]:
    return _write_sets(tmp_path / "in")


def test_schema_file_is_a_valid_json_schema():
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert SCHEMA_PATH.name == "evaluation.schema.json"
    assert {"finetuned", "base", "improvement"} <= set(schema["$defs"]["metric"]["required"])
    assert {"mean", "ci_low", "ci_high"} <= set(schema["$defs"]["estimate"]["required"])


def test_schema_rejects_a_document_without_the_gate_figures(sets, tmp_path):
    result = run_evaluation(sets["finetuned"], sets["refs"], tmp_path / "out",
                            config=parse_config({"evaluation": {"bootstrap_samples": 100}}))
    doc = json.loads(result.evaluation_path.read_text())
    validate_evaluation(doc)
    broken = json.loads(json.dumps(doc))
    del broken["metrics"]["character_similarity"]["finetuned"]["mean"]
    with pytest.raises(ValueError, match="metrics/character_similarity/finetuned"):
        validate_evaluation(broken)
    broken = json.loads(json.dumps(doc))
    broken["metrics"]["character_similarity"]["finetuned"] = None
    with pytest.raises(ValueError, match="does not match its schema"):
        validate_evaluation(broken)
    broken = json.loads(json.dumps(doc))
    broken["images"][0]["similarity"]["ruby"] = "high"
    with pytest.raises(ValueError, match="images/0/similarity/ruby"):
        validate_evaluation(broken)


def test_single_character_evaluation(sets, tmp_path):
    for root in (sets["refs"], sets["finetuned"]):
        for path in (root / "cobalt").iterdir():
            path.unlink()
        (root / "cobalt").rmdir()
    (sets["finetuned"] / "_scratch").mkdir()  # skipped: not a character folder
    result = run_evaluation(sets["finetuned"], sets["refs"], tmp_path / "out",
                            config=parse_config({"evaluation": {"bootstrap_samples": 100}}))
    doc = result.evaluation
    assert doc["characters"] == ["ruby"] and doc["separation_auc"]["finetuned"] is None
    assert doc["metrics"]["identity_accuracy"]["finetuned"] is None
    assert doc["calibration"]["source"] == "references (leave-one-out)" and doc["calibration"]["floor"] is None
    assert doc["metrics"]["character_similarity"]["base"] is None
    assert doc["metrics"]["character_similarity"]["improvement"] is None
    assert any("identity accuracy" in w for w in doc["warnings"])
    assert result.report_path.is_file()


def test_run_evaluation_scores_finetuned_above_base(sets, tmp_path):
    config = parse_config({"evaluation": {"bootstrap_samples": 500, "min_character_similarity": 0.5}})
    result = run_evaluation(sets["finetuned"], sets["refs"], tmp_path / "out", baseline_dir=sets["base"],
                            training_crops_dir=sets["crops"], config=config)
    doc = json.loads(result.evaluation_path.read_text())
    jsonschema.validate(doc, load_schema())
    cs = doc["metrics"]["character_similarity"]
    assert cs["finetuned"]["mean"] > cs["base"]["mean"] + 0.1
    assert cs["improvement"] == pytest.approx(cs["finetuned"]["mean"] - cs["base"]["mean"], abs=1e-5)
    assert cs["improvement_ci_low"] > 0
    assert cs["finetuned"]["ci_low"] <= cs["finetuned"]["mean"] <= cs["finetuned"]["ci_high"]
    assert set(cs["finetuned"]["per_character"]) == set(COLOURS)
    assert doc["metrics"]["identity_accuracy"]["finetuned"]["mean"] == 1.0
    assert doc["separation_auc"]["finetuned"] > 0.95
    assert doc["metrics"]["diversity"]["finetuned"]["n"] == 4  # 2 prompts x 2 characters
    memo = doc["metrics"]["memorisation"]
    assert memo["finetuned"]["mean"] > memo["base"]["mean"] and memo["improvement"] < 0
    assert 0 <= memo["finetuned"]["near_copy_rate"] <= 1
    assert doc["metrics"]["prompt_fidelity"]["finetuned"] is None  # the local descriptor embeds no text
    assert doc["calibration"]["source"] == "training crops apart from the references"
    assert doc["calibration"]["auc"] >= 0.9 and doc["calibration"]["separable"] is True
    assert doc["calibration"]["ceiling"]["mean"] > doc["calibration"]["floor"]["mean"]
    assert doc["gate"]["passed"] is result.passed is True
    images = [i for i in doc["images"] if i["model"] == "finetuned"]
    assert len(images) == 8 and all(set(i["similarity"]) == set(COLOURS) for i in images)
    first = images[0]
    assert first["path"] == "cobalt/cobalt_p0_s0_0.png" and first["prompt_index"] == 0 and first["seed"] == 0
    assert first["character_similarity"] == first["similarity"]["cobalt"]
    assert first["predicted_character"] == "cobalt"
    html = result.report_path.read_text()
    assert html.count("data:image/jpeg;base64,") == 2 * 3 + 2 * 4 * 2  # references + both models' images
    assert "data:image/png;base64," in html and "PASS" in html
    assert "<script" not in html and "src=\"http" not in html  # self-contained


def test_gate_fails_without_enough_improvement(sets, tmp_path):
    config = parse_config({"evaluation": {"bootstrap_samples": 200, "min_character_similarity": 0.99,
                                          "min_improvement": 0.5}})
    result = run_evaluation(sets["finetuned"], sets["refs"], tmp_path / "out", baseline_dir=sets["finetuned"],
                            config=config)
    gate = result.evaluation["gate"]
    assert not result.passed and gate["status"] == "failed" and len(gate["reasons"]) == 4
    verdicts = {c["name"]: c["verdict"] for c in gate["criteria"]}
    assert verdicts == {"character_similarity": "not_met", "improvement_over_base": "not_met",
                        "near_copy_rate": "not_measured",  # a short figure fails even when another is missing
                        "calibration_auc": "not_measured"}  # references only: no held-out crops
    assert result.evaluation["metrics"]["character_similarity"]["improvement"] == pytest.approx(0.0, abs=1e-9)
    assert result.evaluation["calibration"]["source"] == "references (leave-one-out)"
    assert "FAIL" in result.report_path.read_text()


def test_generation_log_gives_prompts_and_blocked_requests(sets, tmp_path):
    log = {"model_id": "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abcdef123456",
           "generator": "nova-canvas", "counts": {"ok": 1, "blocked_prompt": 1},
           "records": [{"character": "ruby", "prompt_index": 0, "seed": 0, "prompt": "Ruby climbs a ladder.",
                        "status": "ok", "requested": 1, "returned": 1, "error": None,
                        "files": ["ruby/ruby_p0_s0_0.png"]},
                       {"character": "ruby", "prompt_index": 1, "seed": 9, "prompt": "Ruby at school.",
                        "status": "blocked_prompt", "requested": 1, "returned": 0,
                        "error": "ValidationException: blocked by content filters", "files": []}]}
    (sets["finetuned"] / GENERATION_LOG).write_text(json.dumps(log))
    result = run_evaluation(sets["finetuned"], sets["refs"], tmp_path / "out",
                            config=parse_config({"evaluation": {"bootstrap_samples": 100}}))
    generation = result.evaluation["models"]["finetuned"]["generation"]
    assert generation["counts"]["blocked_prompt"] == 1
    assert generation["problems"][0]["status"] == "blocked_prompt"
    ruby0 = next(i for i in result.evaluation["images"] if i["path"] == "ruby/ruby_p0_s0_0.png")
    assert ruby0["prompt"] == "Ruby climbs a ladder."
    html = result.report_path.read_text()
    assert "Blocked or failed generations" in html and "blocked by content filters" in html


# --- bad input ---------------------------------------------------------------------------------------------


def test_missing_and_empty_folders(sets, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        run_evaluation(tmp_path / "nope", sets["refs"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        run_evaluation(tmp_path / "empty", sets["refs"], tmp_path / "out")
    with pytest.raises(InputError, match="references.*does not exist"):
        run_evaluation(sets["finetuned"], tmp_path / "nope", tmp_path / "out")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "x.png")
    with pytest.raises(InputError, match="lie directly in it"):
        run_evaluation(flat, sets["refs"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_character_without_references(sets, tmp_path):
    (sets["finetuned"] / "emerald").mkdir()
    for k in range(2):
        Image.new("RGB", (16, 16), (0, 200, 0)).save(sets["finetuned"] / "emerald" / f"e{k}.png")
    with pytest.raises(InputError, match=r"\['emerald'\].*no folder"):
        run_evaluation(sets["finetuned"], sets["refs"], tmp_path / "out")


def test_fewer_than_two_images_for_a_character(sets, tmp_path):
    for path in sorted((sets["finetuned"] / "ruby").iterdir())[1:]:
        path.unlink()
    with pytest.raises(InputError, match="1 image.*at least 2.*meaningless"):
        run_evaluation(sets["finetuned"], sets["refs"], tmp_path / "out")


def test_unreadable_image(sets, tmp_path):
    (sets["finetuned"] / "ruby" / "ruby_p0_s0_0.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read image .*ruby_p0_s0_0.png"):
        run_evaluation(sets["finetuned"], sets["refs"], tmp_path / "out")


class _ShrinkingEmbedder(ColorTextureDescriptor):
    """Returns shorter vectors for sets of 4 or more images (as if a second backend had embedded them)."""

    def embed_images(self, images):
        out = super().embed_images(images)
        return out[:, :100] if len(images) >= 4 else out


def test_mismatched_embedding_dimensions(sets, tmp_path):
    with pytest.raises(InputError, match="mismatched embedding dimensions"):
        run_evaluation(sets["finetuned"], sets["refs"], tmp_path / "out", embedder=_ShrinkingEmbedder())


# --- prompt fidelity with Titan (Stubber) ------------------------------------------------------------------


def test_titan_backend_requests_and_prompt_fidelity(sets, tmp_path, aws_env):
    from core import titan_embeddings as titan
    client = boto3.client("bedrock-runtime", region_name="us-east-1")
    sent: list[dict] = []

    def capture(params, **_):
        body = json.loads(params["body"])
        titan.TitanImageEmbedder.validate_body(body)
        sent.append(body)

    client.meta.events.register("before-parameter-build.bedrock-runtime.InvokeModel", capture)
    embedder = titan.TitanImageEmbedder(client, output_length=256, concurrency=1)
    rng = np.random.default_rng(5)
    n_refs, n_images = 2 * 3, 2 * 4
    vectors = rng.normal(size=(n_refs + 2 * n_images, 256))
    expected = {"modelId": "amazon.titan-embed-image-v1", "body": ANY, "contentType": "application/json",
                "accept": "application/json"}
    with Stubber(client) as stubber:
        for v in vectors:
            data = json.dumps({"embedding": v.tolist(), "inputTextTokenCount": 0, "message": None}).encode()
            stubber.add_response("invoke_model", {"body": StreamingBody(io.BytesIO(data), len(data)),
                                                  "contentType": "application/json"}, expected)
        result = run_evaluation(sets["finetuned"], sets["refs"], tmp_path / "out", embedder=embedder,
                                config=parse_config({"evaluation": {"bootstrap_samples": 100}}))
        stubber.assert_no_pending_responses()
    assert [("inputImage" in b) for b in sent] == [True] * (n_refs + n_images) + [False] * n_images
    assert all(b["embeddingConfig"] == {"outputEmbeddingLength": 256} for b in sent)
    texts = [b["inputText"] for b in sent[n_refs + n_images:]]
    assert texts[0].startswith("Cobalt's face shows")  # default template, prompt 0, first (sorted) image
    image_vecs = vectors[n_refs:n_refs + n_images]
    text_vecs = vectors[n_refs + n_images:]
    cos = np.sum(image_vecs * text_vecs, 1) / (np.linalg.norm(image_vecs, axis=1) * np.linalg.norm(text_vecs, axis=1))
    got = [i["prompt_fidelity"] for i in result.evaluation["images"]]
    assert got == pytest.approx(cos, abs=1e-5)
    assert result.evaluation["metrics"]["prompt_fidelity"]["finetuned"]["mean"] == pytest.approx(cos.mean(), abs=1e-3)
    assert result.evaluation["embedding"] == {"backend": embedder.name, "dimension": 256}


# --- command line ---------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="storyboard")
    evaluate_command.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_storyboard_evaluate_command(sets, tmp_path, capsys):
    config = tmp_path / "pipeline.yaml"
    config.write_text("evaluation:\n  bootstrap_samples: 200\n  min_character_similarity: 0.5\n")
    args = _parser().parse_args(["evaluate", "--images", str(sets["finetuned"]), "--references", str(sets["refs"]),
                                 "--out", str(tmp_path / "out"), "--baseline-images", str(sets["base"]),
                                 "--training-crops", str(sets["crops"]), "--config", str(config)])
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["gate_passed"] is True and summary["character_similarity"]["improvement"] > 0
    doc = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    validate_evaluation(doc)
    assert doc["settings"]["bootstrap_samples"] == 200
    bad = _parser().parse_args(["evaluate", "--images", str(tmp_path / "none"), "--references", str(sets["refs"]),
                                "--out", str(tmp_path / "out2")])
    with pytest.raises(InputError):
        bad.func(bad)


def test_storyboard_generate_command_from_folder(sets, tmp_path, capsys):
    config = tmp_path / "pipeline.yaml"
    config.write_text("characters:\n  - name: ruby\n  - name: cobalt\n"
                      "evaluation:\n  seeds: [1, 2]\n  images_per_prompt: 2\n")
    args = _parser().parse_args(["generate", "--out", str(tmp_path / "gen"), "--from-folder", str(sets["finetuned"]),
                                 "--config", str(config)])
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["requests"] == 2 * 3 * 2 and summary["images"] == 24
    assert (tmp_path / "gen" / "ruby" / "ruby_p2_s2_1.png").is_file()


# --- the gate: every criterion measured and met (issue 10) ------------------------------------------------------


def test_copies_of_the_training_crops_do_not_pass(sets, tmp_path):
    """Fine-tuned "images" that are the training crops themselves: similarity and improvement are excellent, but
    every image is a near-copy, so the memorisation criterion fails the gate."""
    copies = tmp_path / "copies"
    for character in COLOURS:
        (copies / character).mkdir(parents=True)
        for k, crop in enumerate(sorted((sets["crops"] / character).iterdir())):
            Image.open(crop).save(copies / character / f"{character}_p0_s{k}_0.png")
    config = parse_config({"evaluation": {"bootstrap_samples": 200, "min_character_similarity": 0.5}})
    result = run_evaluation(copies, sets["refs"], tmp_path / "out", baseline_dir=sets["base"],
                            training_crops_dir=sets["crops"], config=config)
    doc = result.evaluation
    memo = doc["metrics"]["memorisation"]["finetuned"]
    assert memo["near_copy_rate"] == 1.0 and memo["near_copy_rate_per_character"] == {"cobalt": 1.0, "ruby": 1.0}
    gate = doc["gate"]
    assert not result.passed and result.status == gate["status"] == "failed"
    criteria = {c["name"]: c for c in gate["criteria"]}
    assert criteria["near_copy_rate"]["verdict"] == "not_met" and criteria["near_copy_rate"]["threshold"] == 0.2
    assert criteria["near_copy_rate"]["per_character"] == {"cobalt": 1.0, "ruby": 1.0}
    assert criteria["character_similarity"]["verdict"] == criteria["improvement_over_base"]["verdict"] == "met"
    assert any("near-copy rate" in r for r in gate["reasons"]) and "near-copy rate" in gate["summary"]
    html = result.report_path.read_text()
    assert "FAIL" in html and "Memorisation: near-copies" in html


def test_no_base_images_is_inconclusive_not_a_pass(sets, tmp_path):
    config = parse_config({"evaluation": {"bootstrap_samples": 100, "min_character_similarity": 0.5}})
    result = run_evaluation(sets["finetuned"], sets["refs"], tmp_path / "out", training_crops_dir=sets["crops"],
                            config=config)
    gate = result.evaluation["gate"]
    assert result.evaluation["metrics"]["character_similarity"]["improvement"] is None
    assert not result.passed and gate["passed"] is False and gate["status"] == "inconclusive"
    improvement = next(c for c in gate["criteria"] if c["name"] == "improvement_over_base")
    assert improvement["verdict"] == "not_measured" and improvement["value"] is None
    assert len(gate["reasons"]) == 1 and "base model" in gate["reasons"][0] and "not measured" in gate["reasons"][0]
    assert gate["summary"].startswith("Quality gate inconclusive")
    html = result.report_path.read_text()
    assert "INCONCLUSIVE" in html and gate["reasons"][0].split("(")[0].strip() in html


def test_gate_decision_needs_every_figure():
    kwargs = {"min_character_similarity": 0.6, "min_improvement": 0.02, "max_near_copy_rate": 0.2}
    passed = evaluate_module.decide_gate(character_similarity=0.7, improvement=0.05, base_similarity=0.65,
                                         near_copy_rate=0.1, **kwargs)
    assert passed["status"] == "passed" and passed["passed"] and passed["reasons"] == []
    assert "0.700" in passed["summary"] and "+0.050" in passed["summary"] and "0.650" in passed["summary"]
    missing = evaluate_module.decide_gate(character_similarity=0.7, improvement=0.05, base_similarity=0.65,
                                          near_copy_rate=None, **kwargs)
    assert missing["status"] == "inconclusive" and not missing["passed"] and "training crops" in missing["reasons"][0]
    short = evaluate_module.decide_gate(character_similarity=0.7, improvement=0.05, base_similarity=0.65,
                                        near_copy_rate=0.5, **kwargs)
    assert short["status"] == "failed" and "0.500" in short["reasons"][0]


def test_too_few_images_are_flagged(sets, tmp_path):
    """4 images per character (fewer than the default 8): estimates and intervals carry few_images."""
    config = parse_config({"evaluation": {"bootstrap_samples": 100}})
    result = run_evaluation(sets["finetuned"], sets["refs"], tmp_path / "out", baseline_dir=sets["base"],
                            config=config)
    cs = result.evaluation["metrics"]["character_similarity"]
    assert result.evaluation["settings"]["min_images_per_character"] == 8
    assert cs["finetuned"]["few_images"] is True and cs["base"]["few_images"] is True
    assert all(e["few_images"] for e in cs["finetuned"]["per_character"].values())
    assert any("fewer than 8 images" in w for w in result.evaluation["warnings"])
    assert "†" in result.report_path.read_text()
    enough = run_evaluation(sets["finetuned"], sets["refs"], tmp_path / "out2", baseline_dir=sets["base"],
                            config=parse_config({"evaluation": {"bootstrap_samples": 100,
                                                                "min_images_per_character": 4}}))
    cs = enough.evaluation["metrics"]["character_similarity"]
    assert cs["finetuned"]["few_images"] is False
    assert not any("fewer than" in w for w in enough.evaluation["warnings"])


def test_paired_bootstrap_is_narrower_than_unpaired_on_paired_data():
    """Base and fine-tuned share a large per-prompt effect (same prompt and seed): resampling the pairs together
    cancels it, two independent bootstraps do not (Efron & Tibshirani 1993)."""
    rng = np.random.default_rng(11)
    prompt_effect = {c: rng.normal(0, 0.15, 24) for c in ("a", "b")}
    fin = {c: 0.7 + e + rng.normal(0, 0.01, e.size) for c, e in prompt_effect.items()}
    base = {c: 0.6 + e + rng.normal(0, 0.01, e.size) for c, e in prompt_effect.items()}
    paired, _ = M.paired_difference({c: (fin[c], base[c]) for c in fin}, 2000, 0.95, np.random.default_rng(0))
    unpaired = M.difference(M.estimate(fin, 2000, 0.95, np.random.default_rng(1)),
                            M.estimate(base, 2000, 0.95, np.random.default_rng(2)), 0.95)
    assert paired.mean == pytest.approx(unpaired.mean)
    assert paired.ci_low < paired.mean < paired.ci_high
    assert (paired.ci_high - paired.ci_low) < (unpaired.ci_high - unpaired.ci_low) / 3
    assert paired.ci_low > 0 and unpaired.ci_low < paired.ci_low  # the paired interval sees the real gap sooner
    with pytest.raises(ValueError, match="differ in length"):
        M.paired_difference({"a": (np.ones(3), np.ones(4))}, 10, 0.95, rng)


def test_run_evaluation_pairs_base_and_finetuned_by_file_name(sets, tmp_path):
    config = parse_config({"evaluation": {"bootstrap_samples": 200}})
    result = run_evaluation(sets["finetuned"], sets["refs"], tmp_path / "out", baseline_dir=sets["base"],
                            config=config)
    cs = result.evaluation["metrics"]["character_similarity"]
    assert cs["difference_method"] == "paired" and cs["pairs"] == 8
    renamed = tmp_path / "renamed"
    for character in COLOURS:
        (renamed / character).mkdir(parents=True)
        for k, path in enumerate(sorted((sets["base"] / character).iterdir())):
            Image.open(path).save(renamed / character / f"other_{k}.png")
    unpaired = run_evaluation(sets["finetuned"], sets["refs"], tmp_path / "out2", baseline_dir=renamed,
                              config=config).evaluation["metrics"]["character_similarity"]
    assert unpaired["difference_method"] == "unpaired" and unpaired["pairs"] is None


# --- folders that are no character; characters defined by references.yaml -------------------------------------


def test_dropped_and_underscore_folders_are_skipped_with_a_warning(sets, tmp_path):
    crops = tmp_path / "crops"
    for name in ("ruby", "cobalt", "dropped", "_tmp"):
        (crops / name).mkdir(parents=True)
    for character in COLOURS:
        for path in (sets["crops"] / character).iterdir():
            Image.open(path).save(crops / character / path.name)
    Image.new("RGB", (96, 96), (0, 0, 0)).save(crops / "dropped" / "x.jpg")
    Image.new("RGB", (96, 96), (0, 0, 0)).save(crops / "_tmp" / "y.jpg")
    (sets["refs"] / "dropped").mkdir()
    Image.new("RGB", (96, 96), (9, 9, 9)).save(sets["refs"] / "dropped" / "z.png")
    (sets["finetuned"] / ".cache").mkdir()
    result = run_evaluation(sets["finetuned"], sets["refs"], tmp_path / "out", training_crops_dir=crops,
                            config=parse_config({"evaluation": {"bootstrap_samples": 100}}))
    doc = result.evaluation
    assert doc["reference_characters"] == ["cobalt", "ruby"]  # dropped/ is not a character
    warnings = "\n".join(doc["warnings"])
    for folder in ("dropped", "_tmp", ".cache"):
        assert f"{folder} (" in warnings, folder
    assert doc["metrics"]["memorisation"]["finetuned"]["n"] == 8


def _yaml_only_references(sets, tmp_path):
    """ruby defined by frame regions of a video in references.yaml; cobalt by image files."""
    import av

    video = tmp_path / "clip.mp4"
    rng = np.random.default_rng(4)
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 192, 96, "yuv420p"
        for _ in range(4):
            frame = np.concatenate([np.asarray(_character_image(COLOURS["ruby"], rng)),
                                    np.asarray(_scene_image(rng))], axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    for path in (sets["refs"] / "ruby").iterdir():
        path.unlink()
    (sets["refs"] / "ruby" / "references.yaml").write_text(
        "- {frame_index: 0, bbox: [0, 0, 96, 96]}\n- {frame_index: 2, bbox: [0, 0, 96, 96]}\n")
    return video


def test_references_yaml_only_character_needs_the_video_and_works_with_it(sets, tmp_path, capsys):
    video = _yaml_only_references(sets, tmp_path)
    with pytest.raises(InputError, match="references.yaml.*--video"):
        run_evaluation(sets["finetuned"], sets["refs"], tmp_path / "out")
    base = ["evaluate", "--images", str(sets["finetuned"]), "--references", str(sets["refs"]),
            "--baseline-images", str(sets["base"]), "--training-crops", str(sets["crops"])]
    config = tmp_path / "pipeline.yaml"
    config.write_text("evaluation:\n  bootstrap_samples: 100\n  min_character_similarity: 0.5\n")
    no_video = _parser().parse_args([*base, "--out", str(tmp_path / "o1"), "--config", str(config)])
    with pytest.raises(InputError, match="no --video"):
        no_video.func(no_video)
    (sets["refs"] / "dropped").mkdir()
    args = _parser().parse_args([*base, "--out", str(tmp_path / "o2"), "--config", str(config),
                                 "--video", str(video), "--max-near-copy-rate", "1.0"])
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    doc = json.loads((tmp_path / "o2" / "evaluation.json").read_text())
    assert doc["reference_characters"] == ["cobalt", "ruby"]
    assert doc["models"]["finetuned"]["references_per_character"] == {"cobalt": 3, "ruby": 2}
    assert doc["inputs"]["references"] == str(tmp_path / "o2" / "references")
    assert sorted(p.name for p in (tmp_path / "o2" / "references" / "ruby").iterdir()) == ["ref_000.png",
                                                                                         "ref_001.png"]
    ruby = doc["metrics"]["character_similarity"]["finetuned"]["per_character"]["ruby"]["mean"]
    assert ruby > doc["metrics"]["character_similarity"]["base"]["per_character"]["ruby"]["mean"]
    assert doc["gate"]["max_near_copy_rate"] == 1.0 and summary["gate_status"] == doc["gate"]["status"]
    assert any("dropped" in w for w in summary["warnings"])


def test_background_windows_alone_pair_with_the_held_out_training_crops(sets, tmp_path):
    """The pipeline's dataset carries only calibration/_background/ (ExtractFrames' windows of frames with no
    character): Evaluate pairs them with the training crops that copy no reference, per character."""
    rng = np.random.default_rng(5)
    background = tmp_path / "calibration" / "_background"
    background.mkdir(parents=True)
    for k in range(4):
        _scene_image(rng).save(background / f"clip_f{k:06d}_0.png")
    config = parse_config({"evaluation": {"bootstrap_samples": 100, "memorisation_threshold": 0.999}})
    result = run_evaluation(sets["finetuned"], sets["refs"], tmp_path / "out", baseline_dir=sets["base"],
                            training_crops_dir=sets["crops"], calibration_dir=tmp_path / "calibration", config=config)
    calibration = result.evaluation["calibration"]
    assert "background windows" in calibration["source"]
    for character in COLOURS:
        entry = calibration["per_character"][character]
        assert entry["auc"] is not None and entry["background"] is not None, entry
