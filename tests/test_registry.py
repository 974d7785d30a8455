"""Step 7, RegisterModel, and the approval logic: the registration request, the local registry, the
SageMaker Model Registry against moto, and Provisioned Throughput on approval (Stubber / planned)."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from containers.lambda_handlers.local import LAMBDA_HANDLERS, approve
from core.config import parse_config
from core.errors import InputError
from core.mlops_config import ProvisionedThroughputConfig
from steps.registry import (
    BedrockProvisionedThroughputs,
    LocalModelRegistry,
    PlannedProvisionedThroughputs,
    RegistrationRequest,
    SageMakerModelRegistry,
    ThroughputBusyError,
    client_token,
    model_package_request,
    on_package_status_change,
    register_model,
    throughput_name,
    throughput_request,
)
from steps.request_validation import request_problems

EXECUTION = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/storyboard/execution/a1b2c3d4e5f6"
JOB = "arn:aws:bedrock:us-east-1:123456789012:model-customization-job/amazon.nova-canvas-v1:0/abcdefabcdef"
MODEL = "arn:aws:bedrock:us-east-1:123456789012:custom-model/amazon.nova-canvas-v1:0/abcdefabcdef"


ARTIFACT = "s3://bucket/runs/x/FineTune/storyboard-lora-a1b2c3/output/model.tar.gz"
BASE_URI = "s3://bucket/models/stable-diffusion-xl-base-1.0"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/storyboard-inference:latest"
ROLE = "arn:aws:iam::123456789012:role/storyboard-sagemaker"


def _lora_event(**overrides: str) -> dict:
    """The RegisterModel event of the sagemaker backend (the contract's keys)."""
    event = {"FineTuneBackend": "sagemaker", "ModelDataUrl": ARTIFACT, "TrainingJobName": "storyboard-lora-a1b2c3",
             "BaseModelS3Uri": BASE_URI, "BaseModelId": "stabilityai/stable-diffusion-xl-base-1.0",
             "InferenceImageUri": IMAGE, "InferenceInstanceTypes": "ml.g5.2xlarge, ml.g5.4xlarge",
             "ModelPackageGroupName": "storyboard-characters", "ModelApprovalStatus": "PendingManualApproval",
             "EvaluationReportUri": "s3://bucket/eval/evaluation.json",
             "ReviewedManifestUri": "s3://bucket/review/train.jsonl", "PipelineExecutionArn": EXECUTION,
             "ClientToken": "a1b2c3d4e5f6", "DryRun": "false", "CharacterSimilarity": "0.712",
             "ImprovementOverBase": "0.081", "ExecutionRoleArn": ROLE}
    event.update(overrides)
    return event


def _event(**overrides: str) -> dict:
    event = {"ModelPackageGroupName": "storyboard-characters", "EvaluationUri": "s3://bucket/eval/evaluation.json",
             "CustomModelArn": MODEL, "JobArn": JOB, "DryRun": "false", "PipelineExecutionArn": EXECUTION,
             "BaseModelId": "amazon.nova-canvas-v1:0", "CharacterSimilarity": "0.712", "Improvement": "0.081"}
    event.update(overrides)
    return event




# -- request --------------------------------------------------------------------------------------------


def test_registration_request_carries_arns_metrics_and_a_deterministic_token():
    request = RegistrationRequest.from_event(_event(), "default-group")
    assert request.metrics == {"CharacterSimilarity": "0.712", "Improvement": "0.081"}
    create = model_package_request(request, "PendingManualApproval")
    assert request_problems("sagemaker", "CreateModelPackage", create) == []
    meta = create["CustomerMetadataProperties"]
    assert meta["BedrockJobArn"] == JOB and meta["CustomModelArn"] == MODEL
    assert meta["metric:CharacterSimilarity"] == "0.712" and meta["BaseModelId"] == "amazon.nova-canvas-v1:0"
    assert create["ModelMetrics"]["ModelQuality"]["Statistics"] == {"ContentType": "application/json",
                                                                    "S3Uri": "s3://bucket/eval/evaluation.json"}
    assert create["MetadataProperties"] == {"GeneratedBy": EXECUTION}
    assert create["ClientToken"] == client_token(EXECUTION) and len(create["ClientToken"]) == 36
    assert client_token(EXECUTION) != client_token(EXECUTION + "x")
    assert RegistrationRequest.from_event({**_event(), "ModelPackageGroupName": ""}, "dflt").model_package_group_name \
        == "dflt"


def test_registration_request_limits():
    with pytest.raises(InputError, match="PipelineExecutionArn"):
        RegistrationRequest.from_event(_event(PipelineExecutionArn=""), "g")
    with pytest.raises(InputError, match="EvaluationUri"):
        RegistrationRequest.from_event(_event(EvaluationUri=""), "g")
    with pytest.raises(InputError, match="ModelPackageGroupName"):
        RegistrationRequest.from_event(_event(ModelPackageGroupName="bad_group!"), "g")
    many = RegistrationRequest.from_event({**_event(), **{f"m{i}": "1" for i in range(50)}}, "g")
    with pytest.raises(InputError, match="at most 50"):
        model_package_request(many, "PendingManualApproval")
    long_value = RegistrationRequest.from_event(_event(Score="0." + "1" * 300), "g")
    with pytest.raises(InputError, match="at most 256"):
        model_package_request(long_value, "PendingManualApproval")
    with pytest.raises(InputError, match="ModelApprovalStatus"):
        RegistrationRequest.from_event(_event(ModelApprovalStatus="Maybe"), "g")


def test_registration_request_accepts_the_definition_spellings():
    event = {**_event(), "EvaluationReportUri": "s3://bucket/e/evaluation.json", "ModelApprovalStatus": "Approved",
             "ClientToken": "a1b2c3d4e5f6", "ReviewedManifestUri": "s3://bucket/review/train.jsonl",
             "Note": "not a number", "Flag": True}
    del event["EvaluationUri"]
    request = RegistrationRequest.from_event(event, "g")
    assert request.metrics == {"CharacterSimilarity": "0.712", "Improvement": "0.081"}
    create = model_package_request(request, "PendingManualApproval")
    assert create["ModelApprovalStatus"] == "Approved" and create["ClientToken"] == "a1b2c3d4e5f6"
    assert create["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"] == "s3://bucket/e/evaluation.json"
    assert create["CustomerMetadataProperties"]["ReviewedManifestUri"] == "s3://bucket/review/train.jsonl"
    bad_token = RegistrationRequest.from_event({**_event(), "ClientToken": "not valid!"}, "g")
    assert model_package_request(bad_token, "PendingManualApproval")["ClientToken"] == client_token(EXECUTION)


def test_lora_registration_builds_a_deployable_package():
    request = RegistrationRequest.from_event(_lora_event(), "g")
    assert request.backend == "sagemaker" and request.inference_instance_types == ["ml.g5.2xlarge", "ml.g5.4xlarge"]
    assert request.metrics == {"CharacterSimilarity": "0.712", "ImprovementOverBase": "0.081"}
    create = model_package_request(request, "PendingManualApproval")
    assert request_problems("sagemaker", "CreateModelPackage", create) == []
    spec = create["InferenceSpecification"]
    [container] = spec["Containers"]
    assert container["Image"] == IMAGE and container["ModelDataUrl"] == ARTIFACT
    assert container["AdditionalModelDataSources"] == [{"ChannelName": "base_model", "S3DataSource": {
        "S3Uri": BASE_URI + "/", "S3DataType": "S3Prefix", "CompressionType": "None"}}]
    assert container["Environment"] == {"STORYBOARD_BASE_MODEL_DIR": "/opt/ml/additional-model-data-sources/base_model",
                                        "SAGEMAKER_PROGRAM": "inference.py"}
    assert spec["SupportedContentTypes"] == ["application/json"]
    assert spec["SupportedResponseMIMETypes"] == ["image/png", "application/json"]
    assert spec["SupportedRealtimeInferenceInstanceTypes"] == ["ml.g5.2xlarge", "ml.g5.4xlarge"]
    meta = create["CustomerMetadataProperties"]
    assert meta["FineTuneBackend"] == "sagemaker" and meta["TrainingJobName"] == "storyboard-lora-a1b2c3"
    assert meta["BaseModelS3Uri"] == BASE_URI and meta["ModelDataUrl"] == ARTIFACT and meta["ExecutionRoleArn"] == ROLE
    assert meta["metric:ImprovementOverBase"] == "0.081" and "CustomModelArn" not in meta
    assert create["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"] == "s3://bucket/eval/evaluation.json"
    assert create["ClientToken"] == "a1b2c3d4e5f6" and create["MetadataProperties"] == {"GeneratedBy": EXECUTION}
    assert "LoRA" in create["ModelPackageDescription"] and EXECUTION in create["ModelPackageDescription"]
    # a bedrock event is what it was: no inference specification
    assert "InferenceSpecification" not in model_package_request(RegistrationRequest.from_event(_event(), "g"),
                                                                 "PendingManualApproval")


def test_lora_registration_refuses_or_skips_with_a_reason():
    dry = RegistrationRequest.from_event(_lora_event(DryRun="true"), "g")
    assert "dry run" in register_model(dry, LocalModelRegistry("/nonexistent/registry.json")).reason
    result = register_model(RegistrationRequest.from_event(_lora_event(ModelDataUrl=""), "g"),
                            LocalModelRegistry("/nonexistent/registry.json"))
    assert not result.registered and "no ModelDataUrl" in result.reason
    with pytest.raises(InputError, match="InferenceImageUri.*sagemaker.inference_image_uri"):
        model_package_request(RegistrationRequest.from_event(_lora_event(InferenceImageUri=""), "g"), "Approved")
    with pytest.raises(InputError, match="BaseModelS3Uri"):
        model_package_request(RegistrationRequest.from_event(_lora_event(BaseModelS3Uri=""), "g"), "Approved")
    with pytest.raises(InputError, match="FineTuneBackend"):
        RegistrationRequest.from_event(_lora_event(FineTuneBackend="vertex"), "g")
    bad_type = RegistrationRequest.from_event(_lora_event(InferenceInstanceTypes="ml.nothing.big"), "g")
    with pytest.raises(InputError, match="SupportedRealtimeInferenceInstanceTypes"):
        SageMakerModelRegistry(boto3.client("sagemaker", region_name="us-east-1")).create_package(
            model_package_request(bad_type, "PendingManualApproval"))


def test_lora_registration_request_is_what_sagemaker_receives(aws_env):
    sm = boto3.client("sagemaker", region_name="us-east-1")
    request = RegistrationRequest.from_event(_lora_event(), "g")
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model-package/storyboard-characters/1"
    with Stubber(sm) as stub:  # the Stubber validates each request against the service model
        stub.add_client_error("describe_model_package_group", "ValidationException", "does not exist")
        stub.add_response("create_model_package_group", {"ModelPackageGroupArn": arn.rsplit("/", 1)[0]})
        stub.add_response("list_model_packages", {"ModelPackageSummaryList": []})
        stub.add_response("create_model_package", {"ModelPackageArn": arn},
                          model_package_request(request, "PendingManualApproval"))
        result = register_model(request, SageMakerModelRegistry(sm))
        stub.assert_no_pending_responses()
    assert result.registered and result.model_package_arn == arn


# -- local registry -------------------------------------------------------------------------------------


def test_local_register_is_idempotent_and_dry_runs_register_nothing(tmp_path):
    config = parse_config({})
    register = LAMBDA_HANDLERS["storyboard-register-model"]
    run = tmp_path / "run" / "RegisterModel"
    dry = register(_event(DryRun="true", CustomModelArn="", JobArn="dry-run:storyboard-canvas-x"), run, config)
    assert dry["Registered"] == "false" and dry["ModelPackageArn"] == "" and "dry run" in dry["Reason"]
    assert not (tmp_path / "registry.json").exists()
    no_model = register(_event(CustomModelArn=""), run, config)
    assert no_model["Registered"] == "false" and "no CustomModelArn" in no_model["Reason"]
    first = register(_event(), run, config)
    second = register(_event(), run, config)
    assert first["Registered"] == second["Registered"] == "true"
    assert first["ModelPackageArn"] == second["ModelPackageArn"] and "nothing new" in second["Reason"]
    third = register(_event(PipelineExecutionArn=EXECUTION + "2"), run, config)
    assert third["ModelPackageArn"].endswith("/2")
    data = json.loads((tmp_path / "registry.json").read_text())  # <runs>/registry.json, shared by executions
    assert len(data["packages"]) == 2 and "storyboard-characters" in data["groups"]
    assert data["packages"][0]["ModelApprovalStatus"] == "PendingManualApproval"
    assert json.loads((run / "registration.json").read_text())["Registered"] == "true"


def test_local_approval_plans_a_throughput(tmp_path):
    config = parse_config({})
    run = tmp_path / "run" / "RegisterModel"
    arn = LAMBDA_HANDLERS["storyboard-register-model"](_event(), run, config)["ModelPackageArn"]
    action = approve(arn, "Approved", tmp_path, config)
    assert action.action == "created" and action.throughput_name == "storyboard-characters"  # one per group
    plans = [json.loads(line) for line in
             (tmp_path / "deployments" / "throughput_requests.jsonl").read_text().splitlines()]
    assert plans[0]["request"]["modelUnits"] == 1 and "commitmentDuration" not in plans[0]["request"]
    assert approve(arn, "Approved", tmp_path, config).action == "exists"
    package = LocalModelRegistry(tmp_path / "registry.json").describe_package(arn)
    assert package["CustomerMetadataProperties"]["ProvisionedModelName"] == "storyboard-characters"
    assert package["CustomerMetadataProperties"]["FineTuneBackend"] == "bedrock"
    assert approve(arn, "Rejected", tmp_path, config).action == "deleted"
    plans = [json.loads(line) for line in
             (tmp_path / "deployments" / "throughput_requests.jsonl").read_text().splitlines()]
    assert [p["action"] for p in plans] == ["create", "delete", "delete_custom_model"]
    assert not (tmp_path / "deployments" / "deployment_requests.jsonl").exists()  # no endpoint for Bedrock
    with pytest.raises(InputError):
        approve(arn, "Maybe", tmp_path, config)


# -- SageMaker Model Registry (moto) --------------------------------------------------------------------


def test_sagemaker_registry_creates_once_per_execution(aws_env):
    with mock_aws():
        sm = boto3.client("sagemaker", region_name="us-east-1")
        registry = SageMakerModelRegistry(sm)
        request = RegistrationRequest.from_event(_event(), "g")
        first = register_model(request, registry)
        second = register_model(request, registry)
        assert first.registered and second.registered and first.model_package_arn == second.model_package_arn
        packages = sm.list_model_packages(ModelPackageGroupName="storyboard-characters")["ModelPackageSummaryList"]
        assert len(packages) == 1
        described = sm.describe_model_package(ModelPackageName=first.model_package_arn)
        assert described["ModelApprovalStatus"] == "PendingManualApproval"
        assert described["MetadataProperties"]["GeneratedBy"] == EXECUTION
        assert described["CustomerMetadataProperties"]["metric:Improvement"] == "0.081"
        assert described["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"] == "s3://bucket/eval/evaluation.json"
        other = register_model(RegistrationRequest.from_event(_event(PipelineExecutionArn=EXECUTION + "9"), "g"),
                               registry)
        assert other.model_package_arn != first.model_package_arn
        dry = register_model(RegistrationRequest.from_event(_event(DryRun="true"), "g"), registry)
        assert not dry.registered
        assert len(sm.list_model_packages(ModelPackageGroupName="storyboard-characters")
                   ["ModelPackageSummaryList"]) == 2


# -- approval: provisioned throughput (Stubber) ---------------------------------------------------------


def _package(status: str, version: int = 3, model: str = MODEL) -> dict:
    return {"ModelPackageArn": f"arn:aws:sagemaker:us-east-1:123456789012:model-package/"
                               f"storyboard-characters/{version}",
            "ModelPackageGroupName": "storyboard-characters", "ModelPackageVersion": version,
            "ModelApprovalStatus": status, "CustomerMetadataProperties": {"CustomModelArn": model}}


def _summary(name: str, model: str, status: str = "InService") -> dict:
    return {"provisionedModelName": name, "provisionedModelArn": "arn:aws:bedrock:us-east-1:123456789012:"
            f"provisioned-model/{'abcdefabcdef' if '-v' not in name else 'legacy000000'}", "modelArn": model,
            "desiredModelArn": model,
            "foundationModelArn": "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-canvas-v1:0",
            "modelUnits": 1, "desiredModelUnits": 1, "status": status, "creationTime": "2026-01-01T00:00:00Z",
            "lastModifiedTime": "2026-01-01T00:00:00Z"}


def _listed(stub: Stubber, *summaries: dict, **params: str) -> None:
    stub.add_response("list_provisioned_model_throughputs", {"provisionedModelSummaries": list(summaries)},
                      {**params, "maxResults": 100})


NEW_MODEL = MODEL.replace("abcdefabcdef", "bbbbbbbbbbbb")


def test_one_throughput_per_group_created_then_repointed(aws_env):
    bedrock = boto3.client("bedrock", region_name="us-east-1")
    throughputs = BedrockProvisionedThroughputs(bedrock)
    default = ProvisionedThroughputConfig()
    name = throughput_name(_package("Approved"), default)
    assert name == throughput_name(_package("Approved", 4), default) == "storyboard-characters"
    create = throughput_request(name, MODEL, _package("Approved")["ModelPackageArn"], default)
    assert request_problems("bedrock", "CreateProvisionedModelThroughput", create) == []
    assert create["modelUnits"] == 1 and "commitmentDuration" not in create
    pt_arn = _summary(name, MODEL)["provisionedModelArn"]
    with Stubber(bedrock) as stub:
        _listed(stub, nameContains=name)
        stub.add_response("create_provisioned_model_throughput", {"provisionedModelArn": pt_arn}, create)
        _listed(stub, nameContains=f"{name}-v")
        assert on_package_status_change(_package("Approved"), default, throughputs).action == "created"
        # a repeated event: nothing new
        _listed(stub, _summary(name, MODEL, "Creating"), nameContains=name)
        _listed(stub, nameContains=f"{name}-v")
        assert on_package_status_change(_package("Approved"), default, throughputs).action == "exists"
        # version 4 approved: the same throughput is re-pointed; one left by the per-version naming is deleted
        _listed(stub, _summary(name, MODEL), nameContains=name)
        stub.add_response("update_provisioned_model_throughput", {},
                          {"provisionedModelId": pt_arn, "desiredModelId": NEW_MODEL})
        legacy = _summary(f"{name}-v2", MODEL)
        _listed(stub, legacy, _summary(f"{name}-v2-other", MODEL), nameContains=f"{name}-v")
        stub.add_response("delete_provisioned_model_throughput", {}, {"provisionedModelId": f"{name}-v2"})
        action = on_package_status_change(_package("Approved", 4, NEW_MODEL), default, throughputs)
        assert action.action == "repointed" and action.throughput_arn == pt_arn
        assert f"from {MODEL} to {NEW_MODEL}" in action.reason and f"{name}-v2" in action.reason
        # a throughput still being updated cannot be re-pointed: the approval is retried later
        _listed(stub, {**_summary(name, NEW_MODEL, "Updating"), "modelArn": MODEL}, nameContains=name)
        with pytest.raises(ThroughputBusyError, match="Updating"):
            on_package_status_change(_package("Approved", 5, MODEL.replace("abcdef", "cccccc")), default, throughputs)
        stub.assert_no_pending_responses()
    shared = ProvisionedThroughputConfig(name="storyboard-live", commitment="OneMonth")
    assert throughput_name(_package("Approved"), shared) == "storyboard-live"
    assert throughput_request("n", MODEL, "p", shared)["commitmentDuration"] == "OneMonth"
    for status, model in (("PendingManualApproval", MODEL), ("Approved", "")):
        assert on_package_status_change(_package(status, model=model), default, throughputs).action == "none"


def test_rejection_deletes_the_custom_model_when_nothing_serves_it(aws_env):
    bedrock = boto3.client("bedrock", region_name="us-east-1")
    throughputs = BedrockProvisionedThroughputs(bedrock)
    default = ProvisionedThroughputConfig()
    name = "storyboard-characters"
    pt_arn = _summary(name, MODEL)["provisionedModelArn"]
    with Stubber(bedrock) as stub:
        # the served model is rejected: its throughput goes, then the model
        _listed(stub, _summary(name, NEW_MODEL), nameContains=name)
        stub.add_response("delete_provisioned_model_throughput", {}, {"provisionedModelId": pt_arn})
        _listed(stub, _summary(name, NEW_MODEL), modelArnEquals=NEW_MODEL)  # still listed while deleting
        stub.add_response("delete_custom_model", {}, {"modelIdentifier": NEW_MODEL})
        action = on_package_status_change(_package("Rejected", 4, NEW_MODEL), default, throughputs)
        assert action.action == "deleted" and f"custom model {NEW_MODEL} deleted" in action.reason
        # a model nothing serves: only the model goes
        _listed(stub, _summary(name, NEW_MODEL), nameContains=name)
        _listed(stub, modelArnEquals=MODEL)
        stub.add_response("delete_custom_model", {}, {"modelIdentifier": MODEL})
        assert on_package_status_change(_package("Rejected"), default, throughputs).reason == \
            f"custom model {MODEL} deleted"
        # a model another throughput serves is kept
        _listed(stub, nameContains=name)
        _listed(stub, _summary("someone-elses", MODEL), modelArnEquals=MODEL)
        assert "kept: served by someone-elses" in on_package_status_change(_package("Rejected"), default,
                                                                           throughputs).reason
        stub.assert_no_pending_responses()
    keep = ProvisionedThroughputConfig(delete_model_on_reject=False)
    with Stubber(bedrock) as stub:
        _listed(stub, nameContains=name)
        assert on_package_status_change(_package("Rejected"), keep, throughputs).action == "none"
        stub.assert_no_pending_responses()


def test_planned_throughputs_and_long_names(tmp_path):
    long = {**_package("Approved", 12), "ModelPackageGroupName": "a" * 63}
    name = throughput_name(long, ProvisionedThroughputConfig())
    assert name == "a" * 63
    planned = PlannedProvisionedThroughputs(tmp_path)
    arn = planned.create({"provisionedModelName": "x", "modelId": MODEL, "modelUnits": 1})
    assert planned.find("x")["provisionedModelArn"] == arn
    planned.delete(arn)
    assert planned.find("x") is None
