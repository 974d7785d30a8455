"""Structure of the compiled SageMaker pipeline definition (our own checks: the official JSON schema is out of
date), offline and deterministic compilation, and parameter defaults taken from pipeline.yaml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from core.config import load_config, parse_config
from core.errors import InputError
from core.sagemaker_config import resolve_settings
from pipeline import parameters as P
from pipeline import step_names as D
from pipeline.expressions import iter_gets, parse_path, walk
from pipeline.local_definition import flatten_steps, validate_definition

REPO = Path(__file__).resolve().parents[1]
ROLE = "arn:aws:iam::123456789012:role/StoryboardPipeline"


@pytest.fixture(scope="module")
def yaml_config():
    """The repository's pipeline.yaml with the Bedrock fine-tune backend (most tests here check its definition;
    the LoRA definition, the default, is checked by the ``lora_*`` fixtures)."""
    data = yaml.safe_load((REPO / "pipeline.yaml").read_text())
    data["finetune"]["backend"] = "bedrock"
    return parse_config(data)


@pytest.fixture(scope="module")
def definition(yaml_config) -> dict[str, Any]:
    from pipeline.compile import compile_definition

    return compile_definition(yaml_config)


@pytest.fixture(scope="module")
def steps(definition):
    return flatten_steps(definition)


@pytest.fixture(scope="module")
def lora_config():
    return load_config(REPO / "pipeline.yaml")


@pytest.fixture(scope="module")
def lora_definition(lora_config) -> dict[str, Any]:
    from pipeline.compile import compile_definition

    return compile_definition(lora_config)


@pytest.fixture(scope="module")
def lora_steps(lora_definition):
    return flatten_steps(lora_definition)


def _ancestors(steps, name: str) -> set[str]:
    seen: set[str] = set()
    stack = list(steps[name].depends)
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(steps[current].depends)
    return seen


def _json_gets(value: Any):
    if isinstance(value, dict):
        if set(value) == {"Std:JsonGet"}:
            yield value["Std:JsonGet"]
        for item in value.values():
            yield from _json_gets(item)
    elif isinstance(value, list):
        for item in value:
            yield from _json_gets(item)


def test_the_seven_steps_and_the_gates(steps):
    kinds = {name: info.type for name, info in steps.items()}
    assert kinds == {
        D.EXTRACT: "Processing", D.CAPTION: "Processing", D.REVIEW: "Callback", D.FINETUNE: "Callback",
        D.EVALUATE: "Processing", D.CHECK_TRAINED: "Condition", D.CHECK_QUALITY: "Condition",
        D.REGISTER: "Lambda", D.FAIL_NOT_TRAINED: "Fail", D.FAIL_QUALITY: "Fail",
        # the evaluation throughput of this run's custom model (tests/test_throughput_lifecycle.py)
        D.PROVISION_EVAL: "Callback", D.RELEASE_EVAL: "Callback"}
    # RegisterModel is reachable only through both gates: a trained model, then the quality figures.
    assert (steps[D.REGISTER].parent, steps[D.REGISTER].branch) == (D.CHECK_QUALITY, True)
    assert (steps[D.CHECK_QUALITY].parent, steps[D.CHECK_QUALITY].branch) == (D.CHECK_TRAINED, True)
    assert (steps[D.FAIL_QUALITY].parent, steps[D.FAIL_QUALITY].branch) == (D.CHECK_QUALITY, False)
    assert (steps[D.FAIL_NOT_TRAINED].parent, steps[D.FAIL_NOT_TRAINED].branch) == (D.CHECK_TRAINED, False)
    trained = steps[D.CHECK_TRAINED].spec["Arguments"]["Conditions"]
    assert trained == [{"Type": "Equals", "LeftValue": {"Get": "Steps.FineTune.OutputParameters['DryRun']"},
                        "RightValue": "false"}]
    # data flows in DESIGN order
    assert _ancestors(steps, D.EVALUATE) >= {D.EXTRACT, D.CAPTION, D.REVIEW, D.FINETUNE}
    assert _ancestors(steps, D.REGISTER) >= {D.EVALUATE, D.CHECK_TRAINED, D.CHECK_QUALITY}
    assert validate_definition(json.loads(json.dumps({"Steps": [s.spec for s in steps.values()
                                                                  if s.parent is None]})))


@pytest.mark.parametrize("which", ["bedrock", "lora"])
def test_every_get_resolves_to_a_declared_parameter_step_output_or_property_file(which, request):
    definition = request.getfixturevalue("definition" if which == "bedrock" else "lora_definition")
    steps = request.getfixturevalue("steps" if which == "bedrock" else "lora_steps")
    parameters = {p["Name"] for p in definition["Parameters"]}
    checked = 0
    for name, info in steps.items():
        args = info.spec.get("Arguments", {})
        if info.type == "Condition":
            args = args["Conditions"]
        for path in iter_gets(args):
            tokens = parse_path(path)
            checked += 1
            if tokens[0] == "Parameters":
                assert tokens[1] in parameters, f"{name}: {path}"
                continue
            if tokens[0] == "Execution":
                assert tokens[1] in ("PipelineExecutionId", "PipelineExecutionArn"), f"{name}: {path}"
                continue
            assert tokens[0] == "Steps", path
            target = steps.get(str(tokens[1]))
            assert target is not None, f"{name}: {path} names no step"
            assert target.name in _ancestors(steps, name), f"{name} reads {target.name} but may run before it"
            rest = tokens[2:]
            if rest[0] == "OutputParameters":
                declared = [o["OutputName"] for o in target.spec["OutputParameters"]]
                assert rest[1] in declared and len(rest) == 2, f"{name}: {path} (declared {declared})"
            elif rest[0] == "PropertyFiles":
                declared = [pf["PropertyFileName"] for pf in target.spec.get("PropertyFiles", [])]
                assert rest[1] in declared, f"{name}: {path}"
            elif rest[0] == "ProcessingOutputConfig":
                assert target.type == "Processing"
                walk(target.spec["Arguments"], rest[:3], path)  # the named output exists
                assert rest[3:] == ["S3Output", "S3Uri"], path
            elif target.type == "Training":  # DescribeTrainingJob fields the local runner also sets
                assert rest in (["ModelArtifacts", "S3ModelArtifacts"], ["TrainingJobName"]), path
            else:
                pytest.fail(f"{name}: unexpected property path {path}")
    assert checked > 30
    # Property files read outputs their step declares.
    for info in steps.values():
        for pf in info.spec.get("PropertyFiles", []):
            outputs = [o["OutputName"] for o in info.spec["Arguments"]["ProcessingOutputConfig"]["Outputs"]]
            assert pf["OutputName"] in outputs


def test_jsonget_paths_exist_in_evaluation_json_written_by_the_evaluate_step(definition, steps, tmp_path):
    from evaluation.evaluate import run_evaluation
    from evaluation.schema import validate_evaluation

    rng = np.random.default_rng(3)
    palette = {"bunny": (230, 230, 220), "sintel": (150, 60, 40)}
    for root, count, noise in (("refs", 3, 10), ("finetuned", 3, 30), ("base", 3, 90)):
        for character, colour in palette.items():
            folder = tmp_path / root / character
            folder.mkdir(parents=True)
            for i in range(count):
                image = np.clip(np.array(colour) + rng.normal(0, noise, (96, 96, 3)), 0, 255).astype(np.uint8)
                image[20 + 5 * i:60, 30:70] = 255 - np.array(colour)
                Image.fromarray(image).save(folder / f"{character}_p0_s{i}_0.png")
    config = parse_config({"evaluation": {"bootstrap_samples": 100}})
    run_evaluation(tmp_path / "finetuned", tmp_path / "refs", tmp_path / "out", baseline_dir=tmp_path / "base",
                   config=config)
    document = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    validate_evaluation(document)
    paths = set()
    for info in steps.values():
        for jsonget in _json_gets(info.spec.get("Arguments", {})):
            ref = parse_path(jsonget["PropertyFile"]["Get"])
            assert (ref[1], ref[3]) == (D.EVALUATE, D.EVALUATION_PROPERTY_FILE)
            paths.add(jsonget["Path"])
    assert paths == {D.GATE_STATUS_PATH, D.GATE_SUMMARY_PATH, D.SIMILARITY_PATH, D.IMPROVEMENT_PATH}
    for path in (D.GATE_STATUS_PATH, D.GATE_SUMMARY_PATH):
        assert isinstance(walk(document, parse_path(path), path), str), path
    assert walk(document, parse_path(D.GATE_STATUS_PATH), "status") in ("passed", "failed", "inconclusive")
    for path in (D.SIMILARITY_PATH, D.IMPROVEMENT_PATH):  # RegisterModel's figures, read only after a pass
        value = walk(document, parse_path(path), path)
        assert isinstance(value, float), (path, value)
    # CheckQuality and the Fail step read only paths that are strings in every evaluation.json, also without base
    # images (an inconclusive gate): a JsonGet of null would fail the step instead of taking the else branch.
    run_evaluation(tmp_path / "finetuned", tmp_path / "refs", tmp_path / "nobase", config=config)
    nobase = json.loads((tmp_path / "nobase" / "evaluation.json").read_text())
    assert nobase["gate"]["status"] == "inconclusive"
    assert nobase["metrics"]["character_similarity"]["improvement"] is None
    gate_paths = {j["Path"] for j in _json_gets([steps[D.CHECK_QUALITY].spec["Arguments"]["Conditions"],
                                                 steps[D.FAIL_QUALITY].spec["Arguments"]["ErrorMessage"]])}
    assert gate_paths == {D.GATE_STATUS_PATH, D.GATE_SUMMARY_PATH}
    for path in gate_paths:
        assert isinstance(walk(nobase, parse_path(path), path), str), path
    property_file = steps[D.EVALUATE].spec["PropertyFiles"][0]
    assert property_file == {"PropertyFileName": D.EVALUATION_PROPERTY_FILE, "OutputName": D.EVALUATION_OUTPUT,
                             "FilePath": "evaluation.json"}


def test_parameter_names_and_defaults_follow_pipeline_yaml(definition, yaml_config):
    raw = yaml.safe_load((REPO / "pipeline.yaml").read_text())
    params = {p["Name"]: p for p in definition["Parameters"]}
    assert list(params) == [spec.name for spec in P.specs_for("bedrock")]
    defaults = {name: p.get("DefaultValue") for name, p in params.items()}
    settings = resolve_settings(yaml_config)
    expected = {
        "SamplingMode": raw["sampling"]["mode"],
        "SamplingIntervalSeconds": float(raw["sampling"]["every_s"]),
        "DedupSimilarityThreshold": float(raw["dedup"]["threshold"]),
        "CaptionModelId": raw["captions"]["model_id"],
        "EmbeddingModelId": yaml_config.embeddings.titan_model_id,
        "BaseModelId": yaml_config.finetune.base_model_id,
        "stepCount": yaml_config.finetune.hyperparameters.step_count,
        "batchSize": yaml_config.finetune.hyperparameters.batch_size,
        "learningRate": yaml_config.finetune.hyperparameters.learning_rate,
        "DryRun": "true" if yaml_config.finetune.dry_run else "false",
        "ReviewMode": yaml_config.review.mode,
        "MinCharacterSimilarity": yaml_config.evaluation.min_character_similarity,
        "MinImprovementOverBase": yaml_config.evaluation.min_improvement,
        "MaxNearCopyRate": yaml_config.evaluation.max_near_copy_rate,
        "ModelPackageGroupName": yaml_config.registry.model_package_group_name or f"{yaml_config.project}-characters",
        "ProcessingInstanceType": yaml_config.sagemaker.processing_instance_type,
        "ProcessingInstanceCount": yaml_config.sagemaker.processing_instance_count,
        "InputVideosS3Uri": f"{settings.base_uri}/input/videos/",
        "ReferencesS3Uri": f"{settings.base_uri}/input/references/",
        "EvaluationImagesUri": "",
    }
    for name, value in expected.items():
        assert defaults[name] == value, name
    if "evaluation" in raw and "min_character_similarity" in (raw["evaluation"] or {}):
        assert defaults["MinCharacterSimilarity"] == raw["evaluation"]["min_character_similarity"]
    assert defaults["PipelineConfigS3Uri"].startswith(f"{settings.base_uri}/config/")
    types = {name: p["Type"] for name, p in params.items()}
    assert types["stepCount"] == "Integer" and types["learningRate"] == "Float" and types["ReviewMode"] == "String"
    assert params["ReviewMode"]["EnumValues"] == ["a2i", "auto"]
    assert params["SamplingMode"]["EnumValues"] == ["interval", "keyframes", "shots"]


def test_yaml_overrides_change_defaults_and_bad_overrides_are_named(tmp_path):
    from pipeline.compile import compile_definition

    text = (REPO / "pipeline.yaml").read_text()
    data = yaml.safe_load(text)
    data["finetune"]["backend"] = "bedrock"
    data["sampling"]["every_s"] = 2.5
    data["sagemaker"] = {"role_arn": ROLE, "parameters": {"stepCount": 1400, "ReviewMode": "a2i"},
                         "processing_instance_count": 4}
    config = parse_config(data)
    defaults = {p["Name"]: p.get("DefaultValue") for p in compile_definition(config)["Parameters"]}
    assert defaults["SamplingIntervalSeconds"] == 2.5
    assert defaults["stepCount"] == 1400 and defaults["ReviewMode"] == "a2i"
    assert defaults["ProcessingInstanceCount"] == 4
    assert defaults["InputVideosS3Uri"] == "s3://sagemaker-us-east-1-123456789012/storyboard/input/videos/"
    for bad, match in (({"StepCount": 5}, "unknown parameter"), ({"stepCount": 5}, "outside"),
                       ({"ReviewMode": "manual"}, "one of")):
        data["sagemaker"]["parameters"] = bad
        with pytest.raises(InputError, match=match):
            compile_definition(parse_config(data))
    data["finetune"]["backend"] = "sagemaker"
    for bad, match in (({"stepCount": 1400}, "unknown parameter"), ({"LoraResolution": 100}, "multiple of 8"),
                       ({"LoraRank": 0}, "outside"), ({"MixedPrecision": "fp8"}, "one of")):
        data["sagemaker"]["parameters"] = bad
        with pytest.raises(InputError, match=match):
            compile_definition(parse_config(data))


def test_processing_steps_scale_cache_retry_and_tag(definition, steps, yaml_config):
    settings = resolve_settings(yaml_config)
    for name in (D.EXTRACT, D.CAPTION, D.EVALUATE):
        spec = steps[name].spec
        args = spec["Arguments"]
        assert args["AppSpecification"]["ImageUri"] == settings.processing_image_uri
        assert args["AppSpecification"]["ContainerEntrypoint"] == ["python3", "-m", D.ENTRYPOINT_MODULES[name]]
        cluster = args["ProcessingResources"]["ClusterConfig"]
        assert cluster["InstanceType"] == {"Get": "Parameters.ProcessingInstanceType"}
        assert args["RoleArn"] == settings.role_arn
        assert {"Key": "Project", "Value": "storyboard"} in args["Tags"]
        assert spec["CacheConfig"] == {"Enabled": True, "ExpireAfter": yaml_config.sagemaker.cache_expire_after}
        kinds = {e for policy in spec["RetryPolicies"] for e in policy["ExceptionType"]}
        assert kinds == {"Step.THROTTLING", "Step.SERVICE_FAULT", "SageMaker.CAPACITY_ERROR",
                         "SageMaker.RESOURCE_LIMIT", "SageMaker.JOB_INTERNAL_ERROR"}
        for output in args["ProcessingOutputConfig"]["Outputs"]:
            values = output["S3Output"]["S3Uri"]["Std:Join"]["Values"]
            assert values[:2] == ["s3:/", settings.bucket]
            assert {"Get": "Execution.PipelineExecutionId"} in values and name in values
        config_input = next(i for i in args["ProcessingInputs"] if i["InputName"] == "config")
        assert config_input["S3Input"]["S3Uri"] == {"Get": "Parameters.PipelineConfigS3Uri"}
    extract = steps[D.EXTRACT].spec["Arguments"]
    cluster = extract["ProcessingResources"]["ClusterConfig"]
    assert cluster["InstanceCount"] == {"Get": "Parameters.ProcessingInstanceCount"}
    videos = next(i for i in extract["ProcessingInputs"] if i["InputName"] == "videos")["S3Input"]
    assert videos["S3DataDistributionType"] == "ShardedByS3Key"
    assert videos["S3Uri"] == {"Get": "Parameters.InputVideosS3Uri"}
    for name in (D.CAPTION, D.EVALUATE):
        assert steps[name].spec["Arguments"]["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 1
    # Steps with side effects are never cached and take no retry policy.
    for name in (D.REVIEW, D.FINETUNE, D.REGISTER):
        assert "CacheConfig" not in steps[name].spec and "RetryPolicies" not in steps[name].spec


def test_callbacks_lambda_and_fail_messages(definition, steps, yaml_config):
    settings = resolve_settings(yaml_config)
    review, finetune, register = steps[D.REVIEW].spec, steps[D.FINETUNE].spec, steps[D.REGISTER].spec
    assert review["SqsQueueUrl"] == settings.review_queue_url and finetune["SqsQueueUrl"] == settings.finetune_queue_url
    assert review["Arguments"]["Task"] == "HumanReview" and finetune["Arguments"]["Task"] == "FineTune"
    assert [o["OutputName"] for o in review["OutputParameters"]] == list(D.REVIEW_OUTPUTS)
    assert [o["OutputName"] for o in finetune["OutputParameters"]] == list(D.FINETUNE_OUTPUTS)
    assert {k: finetune["Arguments"][k] for k in ("stepCount", "batchSize", "learningRate", "BaseModelId")} == {
        "stepCount": {"Get": "Parameters.stepCount"}, "batchSize": {"Get": "Parameters.batchSize"},
        "learningRate": {"Get": "Parameters.learningRate"}, "BaseModelId": {"Get": "Parameters.BaseModelId"}}
    assert register["FunctionArn"] == settings.register_function_arn
    assert register["Arguments"]["ModelApprovalStatus"] == "PendingManualApproval"
    assert register["Arguments"]["CustomModelArn"] == {"Get": "Steps.FineTune.OutputParameters['CustomModelArn']"}
    assert [o["OutputName"] for o in register["OutputParameters"]] == list(D.REGISTER_OUTPUTS)
    message = steps[D.FAIL_QUALITY].spec["Arguments"]["ErrorMessage"]["Std:Join"]["Values"]
    gets = list(iter_gets(message))
    assert {"Parameters.MinCharacterSimilarity", "Parameters.MinImprovementOverBase",
            "Parameters.MaxNearCopyRate"} <= set(gets)
    assert {j["Path"] for j in _json_gets(message)} == {D.GATE_STATUS_PATH, D.GATE_SUMMARY_PATH}
    # CheckQuality compares the status the Evaluate step decided, nothing else.
    conditions = steps[D.CHECK_QUALITY].spec["Arguments"]["Conditions"]
    assert len(conditions) == 1 and conditions[0]["Type"] == "Equals" and conditions[0]["RightValue"] == "passed"
    assert conditions[0]["LeftValue"]["Std:JsonGet"]["Path"] == D.GATE_STATUS_PATH
    # The Evaluate step receives the thresholds from the pipeline parameters.
    evaluate_args = steps[D.EVALUATE].spec["Arguments"]["AppSpecification"]["ContainerArguments"]
    joined = {tuple(v if isinstance(v, str) else v.get("Get") for v in a["Std:Join"]["Values"])
              for a in evaluate_args if isinstance(a, dict) and "Std:Join" in a}
    assert {("--min-character-similarity=", "Parameters.MinCharacterSimilarity"),
            ("--min-improvement=", "Parameters.MinImprovementOverBase"),
            ("--max-near-copy-rate=", "Parameters.MaxNearCopyRate")} <= joined
    not_trained = steps[D.FAIL_NOT_TRAINED].spec["Arguments"]["ErrorMessage"]["Std:Join"]["Values"]
    assert "Steps.FineTune.OutputParameters['DryRun']" in list(iter_gets(not_trained))


def test_every_step_has_a_display_name_and_description(steps):
    for name, info in steps.items():
        assert info.spec.get("DisplayName"), name
        assert len(info.spec.get("Description", "")) > 40, name


def test_settings_resolution_and_placeholders(monkeypatch):
    monkeypatch.delenv("STORYBOARD_ROLE_ARN", raising=False)
    monkeypatch.delenv("STORYBOARD_BUCKET", raising=False)
    config = parse_config({})
    offline = resolve_settings(config)
    assert offline.account == "000000000000" and "role_arn" in offline.placeholders and "bucket" in offline.placeholders
    monkeypatch.setenv("STORYBOARD_ROLE_ARN", ROLE)
    real = resolve_settings(config)
    assert real.role_arn == ROLE and real.account == "123456789012" and real.placeholders == ()
    assert real.bucket == "sagemaker-us-east-1-123456789012"
    assert real.register_function_arn == "arn:aws:lambda:us-east-1:123456789012:function:storyboard-register-model"
    assert resolve_settings(config, role_arn="arn:aws:iam::999999999999:role/x").account == "999999999999"
    with pytest.raises(InputError, match="not an IAM role ARN"):
        resolve_settings(config, role_arn="arn:aws:iam::1:user/x")
    with pytest.raises(Exception, match="cache_expire_after"):
        parse_config({"sagemaker": {"cache_expire_after": "30 days"}})


OFFLINE_COMPILE = r"""
import socket, sys
def refuse(*args, **kwargs):
    raise OSError("network access during compile: %r" % (args[1:],))
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from pipeline.commands.cli import build_parser
args = build_parser().parse_args(["compile", "--config", sys.argv[1], "--out", sys.argv[2]])
sys.exit(args.func(args))
"""


def test_compile_is_offline_and_byte_identical(tmp_path):
    script = OFFLINE_COMPILE
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "STORYBOARD_ROLE_ARN"}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(REPO), AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    outputs = []
    for run in (1, 2):
        out = tmp_path / f"definition{run}.json"
        done = subprocess.run([sys.executable, "-c", script, str(REPO / "pipeline.yaml"), str(out)], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    document = json.loads(outputs[0])
    assert document["Version"] == "2020-12-01" and len(document["Steps"]) == 6
    assert outputs[0].decode() == json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def test_lora_backend_trains_with_a_training_step_fed_by_pipeline_parameters(lora_definition, lora_steps,
                                                                              lora_config):
    steps = lora_steps
    kinds = {name: info.type for name, info in steps.items()}
    assert kinds == {
        D.EXTRACT: "Processing", D.CAPTION: "Processing", D.REVIEW: "Callback", D.FINETUNE: "Training",
        D.EVALUATE: "Processing", D.CHECK_QUALITY: "Condition", D.REGISTER: "Lambda", D.FAIL_QUALITY: "Fail"}
    assert steps[D.CHECK_QUALITY].parent is None  # a succeeded training job trained a model
    settings = resolve_settings(lora_config)
    train = steps[D.FINETUNE].spec
    assert train["DisplayName"] == "Fine-tune (LoRA)"
    args = train["Arguments"]
    algo = args["AlgorithmSpecification"]
    assert algo["TrainingImage"] == settings.training_image_uri
    assert algo["ContainerEntrypoint"] == D.TRAINING_ENTRYPOINT
    assert algo["MetricDefinitions"] == [D.LOSS_METRIC]
    hyper = args["HyperParameters"]
    from_params = {"max_train_steps": P.LORA_STEPS, "learning_rate": P.LORA_LEARNING_RATE, "lora_rank": P.LORA_RANK,
                   "resolution": P.LORA_RESOLUTION, "train_batch_size": P.LORA_BATCH_SIZE, "seed": P.TRAINING_SEED,
                   "mixed_precision": P.MIXED_PRECISION}
    for key, parameter in from_params.items():
        assert f"Parameters.{parameter}" in list(iter_gets(hyper[key])), key
    fixed = {k: v for k, v in hyper.items() if k not in from_params}
    assert all(isinstance(v, str) for v in fixed.values()) and fixed == lora_config.finetune.lora.hyperparameters()
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in args["InputDataConfig"]}
    assert channels == {
        "train": {"Get": "Steps.CaptionImages.ProcessingOutputConfig.Outputs['dataset'].S3Output.S3Uri"},
        "review": {"Get": "Steps.HumanReview.OutputParameters['ReviewedManifestUri']"},
        "base_model": {"Get": "Parameters.BaseModelS3Uri"}}
    for key in ("OutputDataConfig", "CheckpointConfig"):
        uri = args[key]["S3OutputPath" if key == "OutputDataConfig" else "S3Uri"]["Std:Join"]["Values"]
        assert uri[:2] == ["s3:/", settings.bucket] and {"Get": "Execution.PipelineExecutionId"} in uri
    assert args["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
    assert args["ResourceConfig"]["InstanceType"] == {"Get": "Parameters.TrainingInstanceType"}
    assert args["EnableManagedSpotTraining"] is False and "MaxWaitTimeInSeconds" not in args["StoppingCondition"]
    # Evaluate and RegisterModel read the model this run trained.
    evaluate = steps[D.EVALUATE].spec["Arguments"]
    inputs = {i["InputName"]: i["S3Input"]["S3Uri"] for i in evaluate["ProcessingInputs"]}
    assert inputs["model"] == {"Get": "Steps.FineTune.ModelArtifacts.S3ModelArtifacts"}
    assert inputs["base_model"] == {"Get": "Parameters.BaseModelS3Uri"}
    assert evaluate["ProcessingResources"]["ClusterConfig"]["InstanceType"] == {
        "Get": "Parameters.EvaluationInstanceType"}
    artifact = {"Get": "Steps.FineTune.ModelArtifacts.S3ModelArtifacts"}
    assert evaluate["AppSpecification"]["ContainerArguments"][:4] == [
        "--finetune-backend", "sagemaker", "--model-data-url", artifact]
    assert evaluate["AppSpecification"]["ImageUri"] == settings.training_image_uri  # PyTorch + CUDA + diffusers
    register = steps[D.REGISTER].spec["Arguments"]
    assert register["ModelDataUrl"] == {"Get": "Steps.FineTune.ModelArtifacts.S3ModelArtifacts"}
    assert register["TrainingJobName"] == {"Get": "Steps.FineTune.TrainingJobName"}
    assert register["FineTuneBackend"] == "sagemaker" and register["InferenceImageUri"] == settings.inference_image_uri
    params = {p["Name"]: p for p in lora_definition["Parameters"]}
    assert list(params) == [spec.name for spec in P.specs_for("sagemaker")]
    assert params[P.LORA_STEPS]["DefaultValue"] == lora_config.finetune.lora.max_train_steps
    assert params[P.BASE_MODEL_URI]["DefaultValue"] == f"{settings.base_uri}/{P.DEFAULT_BASE_MODEL_KEY}"
    assert not {"stepCount", "DryRun", "BaseModelId"} & set(params)


def test_spot_training_sets_the_wait_and_the_config_refuses_a_short_one():
    from pipeline.compile import compile_definition

    data = yaml.safe_load((REPO / "pipeline.yaml").read_text())
    data["sagemaker"].update(training_use_spot=True, training_max_runtime_s=3600, training_max_wait_s=7200)
    args = flatten_steps(compile_definition(parse_config(data)))[D.FINETUNE].spec["Arguments"]
    assert args["EnableManagedSpotTraining"] is True
    assert args["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    data["sagemaker"]["training_max_wait_s"] = 600
    with pytest.raises(Exception, match="training_max_wait_s"):
        parse_config(data)


def test_create_training_job_request_passes_botocore_validation(lora_definition, lora_steps):
    """The FineTune step's CreateTrainingJob request, resolved as SageMaker resolves it at run time, is valid
    for botocore's sagemaker service model (the Stubber validates every parameter)."""
    import boto3
    from botocore.stub import Stubber

    from pipeline.expressions import EvaluationContext

    parameters = {p["Name"]: p.get("DefaultValue") for p in lora_definition["Parameters"]}
    outputs = {D.CAPTION: {"ProcessingOutputConfig": {"Outputs": [{"OutputName": D.DATASET_OUTPUT, "S3Output": {
        "S3Uri": "s3://bucket/storyboard/storyboard-pipeline/exec-1/CaptionImages/dataset"}}]}},
        D.REVIEW: {"OutputParameters": {"ReviewedManifestUri": "s3://bucket/reviews/exec-1/train.jsonl"}}}
    ctx = EvaluationContext(
        parameters=parameters,
        execution={"PipelineExecutionId": "exec-1", "PipelineExecutionArn": "arn:aws:sagemaker:us-east-1:"
                   "123456789012:pipeline/storyboard-pipeline/execution/exec-1"},
        step_properties=lambda name: outputs[name], property_file=None, read_json_uri=None)
    request = ctx.evaluate(lora_steps[D.FINETUNE].spec["Arguments"])
    assert all(isinstance(v, str) for v in request["HyperParameters"].values())
    assert request["HyperParameters"]["max_train_steps"] == str(parameters[P.LORA_STEPS])
    client = boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        stub.add_response("create_training_job", {"TrainingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:"
                                                                     "training-job/storyboard-lora-1"})
        client.create_training_job(TrainingJobName="storyboard-lora-1", **request)
        stub.assert_no_pending_responses()
