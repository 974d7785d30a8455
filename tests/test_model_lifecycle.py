"""Bedrock model lifecycle: GetFoundationModel through botocore's Stubber (requests validated against the
bedrock service model), at `storyboard start` and in ExtractFrames' entry point, before any work."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import boto3
import pytest
from botocore.stub import ANY, Stubber

from core.config import parse_config
from pipeline.commands import context as cmd_context
from pipeline.commands import sagemaker as sm
from steps.model_lifecycle import (
    ModelLifecycleError,
    check_configured_models,
    configured_models,
    foundation_model_id,
)

NOW = datetime(2026, 5, 1, tzinfo=timezone.utc)
EXECUTION = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/storyboard-pipeline/execution/abc123def456"


def details(model_id: str, status: str = "ACTIVE", **dates: datetime) -> dict:
    """A GetFoundationModel response (the members the service model requires, plus modelLifecycle)."""
    lifecycle = {"status": status, **dates}
    return {"modelDetails": {"modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{model_id}",
                             "modelId": model_id, "modelLifecycle": lifecycle}}


LEGACY_CANVAS = details("amazon.nova-canvas-v1:0", "LEGACY", legacyTime=datetime(2026, 3, 30, tzinfo=timezone.utc),
                        publicExtendedAccessTime=datetime(2026, 6, 30, tzinfo=timezone.utc),
                        endOfLifeTime=datetime(2026, 9, 30, tzinfo=timezone.utc))


@pytest.fixture
def bedrock(aws_env):
    client = boto3.client("bedrock", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def config(**sections):
    return parse_config(sections)


@pytest.mark.parametrize("given, expected", [
    ("us.amazon.nova-2-lite-v1:0", "amazon.nova-2-lite-v1:0"),
    ("global.amazon.nova-2-lite-v1:0", "amazon.nova-2-lite-v1:0"),
    ("us-gov.amazon.nova-pro-v1:0", "amazon.nova-pro-v1:0"),
    ("apac.amazon.nova-pro-v1:0", "amazon.nova-pro-v1:0"),
    ("amazon.titan-embed-image-v1", "amazon.titan-embed-image-v1"),
    ("arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-canvas-v1:0", "amazon.nova-canvas-v1:0"),
    ("arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123def456", None),
    ("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/x1y2", None),
])
def test_inference_profiles_are_looked_up_by_their_foundation_model(given, expected):
    assert foundation_model_id(given) == expected


def test_only_models_the_configuration_calls_are_listed():
    assert configured_models(config()) == []  # offline defaults: template captions, local embeddings, LoRA
    cfg = config(captions={"backend": "nova"}, embeddings={"backend": "nova"},
                 finetune={"backend": "bedrock", "dry_run": False})
    listed = {m.key: m.model_id for m in configured_models(cfg)}
    assert listed == {"captions.model_id": "us.amazon.nova-2-lite-v1:0",
                      "embeddings.nova_model_id": "amazon.nova-2-multimodal-embeddings-v1:0",
                      "finetune.base_model_id": "amazon.nova-canvas-v1:0",
                      "evaluation.base_model_id": "amazon.nova-canvas-v1:0"}
    titan = configured_models(config(embeddings={"backend": "titan"}),
                              overrides={"embeddings.titan_model_id": "amazon.titan-embed-image-v2"})
    assert [(m.key, m.model_id) for m in titan] == [("embeddings.titan_model_id", "amazon.titan-embed-image-v2")]
    # a dry run (the default) calls neither base model, so offline local runs need no AWS; DryRun=false does
    dry = config(finetune={"backend": "bedrock"})
    assert configured_models(dry) == []
    assert [m.key for m in configured_models(dry, overrides={"finetune.dry_run": "false"})] == [
        "finetune.base_model_id", "evaluation.base_model_id"]


def test_default_configuration_makes_no_call():
    assert check_configured_models(config(), bedrock=object()) == {}  # object() has no methods: any call fails


def test_active_models_pass_and_a_profile_is_looked_up_by_its_model(bedrock):
    client, stubber = bedrock
    stubber.add_response("get_foundation_model", details("amazon.nova-2-lite-v1:0"),
                         {"modelIdentifier": "amazon.nova-2-lite-v1:0"})
    stubber.add_response("get_foundation_model", details("amazon.nova-2-multimodal-embeddings-v1:0"),
                         {"modelIdentifier": "amazon.nova-2-multimodal-embeddings-v1:0"})
    cfg = config(captions={"backend": "nova"}, embeddings={"backend": "nova"})
    checked = check_configured_models(cfg, client, now=NOW)
    assert {k: v.status for k, v in checked.items()} == {"amazon.nova-2-lite-v1:0": "ACTIVE",
                                                         "amazon.nova-2-multimodal-embeddings-v1:0": "ACTIVE"}


def test_legacy_model_is_refused_with_the_dates_and_the_fix(bedrock):
    client, stubber = bedrock
    stubber.add_response("get_foundation_model", LEGACY_CANVAS, {"modelIdentifier": "amazon.nova-canvas-v1:0"})
    cfg = config(finetune={"backend": "bedrock", "dry_run": False})  # finetune and evaluation share it: one call
    with pytest.raises(ModelLifecycleError) as raised:
        check_configured_models(cfg, client, now=NOW)
    message = str(raised.value)
    assert "2 configured Bedrock model(s) cannot be used" in message
    assert "finetune.base_model_id amazon.nova-canvas-v1:0 is LEGACY" in message
    assert "evaluation.base_model_id amazon.nova-canvas-v1:0 is LEGACY" in message
    assert ("legacyTime 2026-03-30, publicExtendedAccessTime 2026-06-30, endOfLifeTime 2026-09-30"
            in message)
    assert "set finetune.backend: sagemaker" in message


def test_require_active_base_model_false_lets_legacy_through_but_not_end_of_life(bedrock, caplog):
    client, stubber = bedrock
    cfg = config(finetune={"backend": "bedrock", "dry_run": False, "require_active_base_model": False})
    stubber.add_response("get_foundation_model", LEGACY_CANVAS, {"modelIdentifier": "amazon.nova-canvas-v1:0"})
    checked = check_configured_models(cfg, client, now=NOW)  # 2026-05-01: LEGACY, before end of life
    assert checked["amazon.nova-canvas-v1:0"].status == "LEGACY" and "endOfLifeTime 2026-09-30" in caplog.text
    stubber.add_response("get_foundation_model", LEGACY_CANVAS, {"modelIdentifier": "amazon.nova-canvas-v1:0"})
    with pytest.raises(ModelLifecycleError, match="is past its end of life"):
        check_configured_models(cfg, client, now=datetime(2026, 10, 1, tzinfo=timezone.utc))


def test_active_model_past_its_end_of_life_is_refused(bedrock):
    client, stubber = bedrock
    stubber.add_response("get_foundation_model",
                         details("amazon.nova-pro-v1:0", "ACTIVE",
                                 endOfLifeTime=datetime(2026, 4, 1, tzinfo=timezone.utc)),
                         {"modelIdentifier": "amazon.nova-pro-v1:0"})
    cfg = config(captions={"backend": "nova", "model_id": "us.amazon.nova-pro-v1:0"})
    with pytest.raises(ModelLifecycleError, match=r"captions.model_id us.amazon.nova-pro-v1:0 \(looked up as "
                                                  r"amazon.nova-pro-v1:0\) is past its end of life \(endOfLifeTime "
                                                  r"2026-04-01\); fix: set captions.model_id .* to "
                                                  r"us.amazon.nova-2-lite-v1:0"):
        check_configured_models(cfg, client, now=NOW)


def test_announced_retirement_passes_with_a_warning(bedrock, caplog):
    client, stubber = bedrock
    stubber.add_response("get_foundation_model",
                         details("amazon.titan-embed-image-v1", legacyTime=datetime(2026, 12, 1, tzinfo=timezone.utc)),
                         {"modelIdentifier": "amazon.titan-embed-image-v1"})
    check_configured_models(config(embeddings={"backend": "titan"}), client, now=NOW)
    assert "legacyTime 2026-12-01" in caplog.text and "embeddings.backend: nova" in caplog.text


def test_unknown_model_and_missing_permission_are_clear(bedrock):
    client, stubber = bedrock
    stubber.add_client_error("get_foundation_model", "ResourceNotFoundException", "Model not found",
                             http_status_code=404, expected_params={"modelIdentifier": "amazon.nova-9-lite-v1:0"})
    with pytest.raises(ModelLifecycleError, match=r"no foundation model 'amazon.nova-9-lite-v1:0' in us-east-1"):
        check_configured_models(config(captions={"backend": "nova", "model_id": "us.amazon.nova-9-lite-v1:0"}),
                                client, now=NOW)
    stubber.add_client_error("get_foundation_model", "AccessDeniedException", "not authorized",
                             http_status_code=403, expected_params={"modelIdentifier": "amazon.nova-2-lite-v1:0"})
    with pytest.raises(ModelLifecycleError, match="grant bedrock:GetFoundationModel"):
        check_configured_models(config(captions={"backend": "nova"}), client, now=NOW)


# ----- at `storyboard start`, before the pipeline is touched ------------------------------------------------

def _start(tmp_path: Path, monkeypatch, bedrock_client, captions_model: str, *extra: str) -> tuple[int, Stubber]:
    import yaml

    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"captions": {"backend": "nova", "model_id": captions_model},
                                    "sagemaker": {"studio_domain_id": "d-abc123"}}), encoding="utf-8")
    sagemaker = boto3.client("sagemaker", region_name="us-east-1")
    sm_stubber = Stubber(sagemaker)
    sm_stubber.activate()
    monkeypatch.setattr(cmd_context, "sagemaker_client", lambda session, config: sagemaker)
    real = cmd_context.boto_session

    class Session:
        def __init__(self, inner):
            self.inner, self.region_name = inner, inner.region_name

        def client(self, service, **kwargs):
            return bedrock_client if service == "bedrock" else self.inner.client(service, **kwargs)

    monkeypatch.setattr(cmd_context, "boto_session", lambda args, config: Session(real(args, config)))
    parser = argparse.ArgumentParser()
    sm.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["start", "--config", str(path), *extra])
    return sm_stubber, args


def test_start_refuses_a_legacy_model_before_touching_the_pipeline(bedrock, tmp_path, monkeypatch):
    client, stubber = bedrock
    stubber.add_response("get_foundation_model",
                         details("amazon.nova-pro-v1:0", "LEGACY", legacyTime=datetime(2026, 4, 1, tzinfo=timezone.utc),
                                 endOfLifeTime=datetime(2099, 10, 1, tzinfo=timezone.utc)),  # start uses the real clock
                         {"modelIdentifier": "amazon.nova-pro-v1:0"})
    sm_stubber, args = _start(tmp_path, monkeypatch, client, "us.amazon.nova-pro-v1:0")
    with pytest.raises(ModelLifecycleError, match=r"is LEGACY \(legacyTime 2026-04-01, endOfLifeTime 2099-10-01\)"):
        args.func(args)
    sm_stubber.assert_no_pending_responses()  # nothing queued, and any SageMaker call would have raised


def test_start_checks_the_model_a_parameter_overrides_then_starts(bedrock, tmp_path, monkeypatch, capsys):
    client, stubber = bedrock
    stubber.add_response("get_foundation_model", details("amazon.nova-2-lite-v1:0"),
                         {"modelIdentifier": "amazon.nova-2-lite-v1:0"})
    sm_stubber, args = _start(tmp_path, monkeypatch, client, "us.amazon.nova-pro-v1:0",
                              "--param", "CaptionModelId=us.amazon.nova-2-lite-v1:0")
    definition = {"Parameters": [{"Name": "CaptionModelId", "Type": "String",
                                  "DefaultValue": "us.amazon.nova-pro-v1:0"}], "Steps": []}
    sm_stubber.add_response("describe_pipeline", {"PipelineDefinition": json.dumps(definition)},
                            {"PipelineName": "storyboard-pipeline"})
    sm_stubber.add_response("start_pipeline_execution", {"PipelineExecutionArn": EXECUTION},
                            {"PipelineName": "storyboard-pipeline", "ClientRequestToken": ANY,
                             "PipelineParameters": [{"Name": "CaptionModelId",
                                                     "Value": "us.amazon.nova-2-lite-v1:0"}]})
    assert args.func(args) == 0
    assert f"execution: {EXECUTION}" in capsys.readouterr().out
    sm_stubber.assert_no_pending_responses()


# ----- in the first step's entry point, before any video is read ---------------------------------------------

def test_extract_frames_refuses_a_legacy_model_before_any_work(bedrock, tmp_path, monkeypatch, capsys):
    import core.aws
    import steps.extract
    from containers.processing import extract_frames
    from containers.processing.common import run_main

    client, stubber = bedrock
    stubber.add_response("get_foundation_model", LEGACY_CANVAS, {"modelIdentifier": "amazon.nova-canvas-v1:0"})
    root = tmp_path / "processing"
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "pipeline.json").write_text(json.dumps({"finetune": {"backend": "bedrock",
                                                                                     "dry_run": False}}))
    (root / "input" / "videos").mkdir()
    (root / "input" / "videos" / "clip.mp4").write_bytes(b"not decoded: the check comes first")
    monkeypatch.setattr(core.aws, "client_from_config", lambda service, aws=None, **kw: client)
    calls = []
    monkeypatch.setattr(steps.extract, "run_extract", lambda *a, **kw: calls.append(a))
    assert run_main(extract_frames.main, ["--processing-root", str(root)]) == 2
    err = capsys.readouterr().err
    # the real clock (ExtractFrames passes no `now`): Nova Canvas v1 reached its end of life on 2026-09-30
    assert "finetune.base_model_id amazon.nova-canvas-v1:0 is past its end of life" in err
    assert "legacyTime 2026-03-30, publicExtendedAccessTime 2026-06-30, endOfLifeTime 2026-09-30" in err
    assert calls == [] and not (root / "output").exists()
