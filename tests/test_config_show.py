"""One default configuration: the models, the repository's pipeline.yaml and `storyboard config show` agree."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest
import yaml

from core.config import StoryboardConfig, load_config, parse_config
from core.errors import InputError
from pipeline.commands.cli import main
from pipeline.config_yaml import REGENERATE_COMMAND, attribute_docs, render_defaults
from pipeline.parameter_values import check_overrides

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(REPO.glob("examples/*/pipeline.yaml"))


def test_repository_pipeline_yaml_is_the_generated_defaults() -> None:
    expected = render_defaults()
    actual = (REPO / "pipeline.yaml").read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(list(difflib.unified_diff(actual.splitlines(True), expected.splitlines(True),
                                                 "pipeline.yaml", "generated from the models"))[:60])
        pytest.fail(f"pipeline.yaml differs from the built-in defaults of the configuration models. Change defaults "
                    f"in the models (core/config.py and the section models), then regenerate the file from the "
                    f"repository root with:\n\n    {REGENERATE_COMMAND}\n\n{diff}")


def test_repository_pipeline_yaml_loads_to_the_built_in_defaults() -> None:
    assert load_config(REPO / "pipeline.yaml").model_dump() == StoryboardConfig().model_dump()


def test_generated_defaults_are_commented_from_the_field_descriptions() -> None:
    text = render_defaults()
    assert parse_config(yaml.safe_load(text)).model_dump() == StoryboardConfig().model_dump()
    line = next(line for line in text.splitlines() if line.strip().startswith("every_s:"))
    assert "Seconds between sampled frames" in line
    # a field documented only in its model's Attributes docstring still gets a comment
    assert "execution role of the pipeline" in text
    assert "tags of the pipeline" in text


def test_attribute_docs_reads_shared_entries() -> None:
    from core.sagemaker_config import SageMakerConfig

    docs = attribute_docs(SageMakerConfig)
    assert docs["review_queue_url"] == docs["finetune_queue_url"]
    assert docs["role_arn"].startswith("execution role")


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_examples_name_only_their_overrides(path: Path) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    defaults = StoryboardConfig().model_dump(mode="json")

    def leaves(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict) and value:
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    repeated = []
    for dotted, value in leaves(data):
        default = defaults
        for part in dotted.split("."):
            default = default.get(part) if isinstance(default, dict) else None
        if value == default:
            repeated.append(dotted)
    assert not repeated, f"{path} repeats defaults {repeated}; name only the overrides"
    assert "only what it overrides" in path.read_text(encoding="utf-8").replace("\n# ", " ")
    load_config(path)


def _sources(text: str) -> dict[str, str]:
    """``{dotted key: trailing comment}`` of `config show`'s YAML (comment lines above a key are skipped)."""
    found, stack = {}, []
    for line in text.splitlines():
        match = re.match(r"^(\s*)([A-Za-z_]\w*):(.*?)(?:\s+#\s*(.*))?$", line)
        if not match:
            continue
        depth = len(match.group(1)) // 2
        stack = stack[:depth] + [match.group(2)]
        if match.group(4):
            found[".".join(stack)] = match.group(4)
    return found


def test_config_show_prints_values_and_their_sources(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STORYBOARD_ROLE_ARN", raising=False)
    monkeypatch.setenv("STORYBOARD_BUCKET", "team-bucket")
    config_file = tmp_path / "mine.yaml"
    config_file.write_text("project: mine\ndetection:\n  min_score: 0.5\nsampling: {every_s: 2.0}\n")
    assert main(["config", "show", "--config", str(config_file), "--param", "LoraRank=8"]) == 0
    out = capsys.readouterr().out
    document = yaml.safe_load(out)
    shown = parse_config(document)
    assert shown.detection.min_score == 0.5 and shown.sampling.every_s == 2.0 and shown.project == "mine"
    assert shown.sagemaker.bucket == "team-bucket"
    sources = _sources(out)
    assert sources["detection.min_score"] == f"file {config_file}"
    assert sources["sampling.every_s"] == f"file {config_file}"
    assert sources["sampling.mode"] == "default"
    assert sources["detection.temporal_window"] == "default"
    assert sources["sagemaker.bucket"] == "env $STORYBOARD_BUCKET"
    assert sources["sagemaker.role_arn"] == "default"
    assert "#   LoraRank: 8  (--param)" in out
    assert "#   LoraTrainingSteps: 500  (finetune.lora.max_train_steps)" in out
    assert "#   ModelPackageGroupName: 'mine-characters'" in out


def test_config_show_without_config_reads_the_working_folders_pipeline_yaml(tmp_path: Path, capsys,
                                                                           monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["config", "show"]) == 0
    sources = _sources(capsys.readouterr().out)
    assert set(sources.values()) == {"default"}
    (tmp_path / "pipeline.yaml").write_text("dedup: {threshold: 0.9}\n")
    assert main(["config", "show"]) == 0
    assert _sources(capsys.readouterr().out)["dedup.threshold"] == "file pipeline.yaml"


def test_config_show_refuses_an_unknown_parameter_with_a_suggestion(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["config", "show", "--param", "LoraRnak=4"]) == 2
    err = capsys.readouterr().err
    assert "unknown pipeline parameter 'LoraRnak'" in err and "Did you mean LoraRank?" in err
    assert "LoraTrainingSteps" in err  # the list of valid names


def test_parameter_names_are_checked_with_close_matches_and_backends() -> None:
    known = {"LoraRank": "Integer", "LoraTrainingSteps": "Integer", "SamplingMode": "String"}
    with pytest.raises(InputError, match=r"Did you mean LoraTrainingSteps\?") as info:
        check_overrides({"LoraTrainingStep": "5"}, known=known)
    assert "Valid names: LoraRank, LoraTrainingSteps, SamplingMode" in str(info.value)
    with pytest.raises(InputError, match="stepCount is a parameter of pipelines compiled with finetune.backend "
                                         "bedrock"):
        check_overrides({"stepCount": "5"}, known=known)
    with pytest.raises(InputError, match=r"LoraRank=0 is outside 1\.\.256"):
        check_overrides({"LoraRank": "0"}, known=known)
    with pytest.raises(InputError, match="must be one of"):
        check_overrides({"SamplingMode": "every"}, known=known)
    assert check_overrides({"LoraRank": "4", "SamplingMode": "shots"}, known=known) == {"LoraRank": 4,
                                                                                         "SamplingMode": "shots"}


def test_every_command_reads_the_working_folders_pipeline_yaml_without_config(tmp_path: Path, monkeypatch) -> None:
    from core.config import load_config_or_default

    monkeypatch.chdir(tmp_path)
    assert load_config_or_default().model_dump() == StoryboardConfig().model_dump()
    (tmp_path / "pipeline.yaml").write_text("detection: {min_score: 0.4}\n", encoding="utf-8")
    assert load_config_or_default().detection.min_score == 0.4
    other = tmp_path / "other.yaml"
    other.write_text("detection: {min_score: 0.3}\n", encoding="utf-8")
    assert load_config_or_default(other).detection.min_score == 0.3
