"""Deployment of approved LoRA packages to a SageMaker endpoint: names, the create / update / clean-up /
delete sequence against botocore's Stubber (which validates every request against the service model),
the planned offline backend, and ``storyboard approve --local`` end to end on a local registry."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from containers.lambda_handlers.local import LAMBDA_HANDLERS
from core.config import parse_config
from core.errors import InputError
from core.mlops_config import EndpointConfig, RegistryConfig, endpoint_name
from pipeline.commands.cli import main
from steps.endpoint_deployment import (
    EndpointBusyError,
    PlannedEndpointDeployment,
    SageMakerEndpointDeployment,
    deployment_names,
    endpoint_config_request,
    execution_role,
    inference_specification,
    model_request,
    on_endpoint_package_status_change,
)
from steps.request_validation import request_problems

ACCOUNT = "123456789012"
GROUP = "storyboard-characters"
ENDPOINT = "storyboard-characters-endpoint"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/storyboard-sagemaker"
IMAGE = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/storyboard-inference:latest"
BASE = "s3://bucket/models/stable-diffusion-xl-base-1.0/"
SETTINGS = EndpointConfig()


def _package(version: int, status: str = "Approved", **metadata: str) -> dict:
    artifact = f"s3://bucket/runs/e{version}/FineTune/job-{version}/output/model.tar.gz"
    return {"ModelPackageArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model-package/{GROUP}/{version}",
            "ModelPackageGroupName": GROUP, "ModelPackageVersion": version, "ModelApprovalStatus": status,
            "InferenceSpecification": inference_specification(IMAGE, artifact, BASE, ["ml.g5.2xlarge"]),
            "CustomerMetadataProperties": {"FineTuneBackend": "sagemaker", **metadata}}


class Recorder:
    """A registry that only records the metadata written to packages."""

    def __init__(self) -> None:
        self.metadata: dict[str, dict[str, str]] = {}

    def update_metadata(self, arn: str, properties: dict[str, str]) -> None:
        self.metadata.setdefault(arn, {}).update(properties)


def _missing(stub: Stubber, operation: str) -> None:
    stub.add_client_error(operation, "ValidationException", "Could not find the resource.")


def _endpoint(config: str, status: str = "InService") -> dict:
    return {"EndpointName": ENDPOINT, "EndpointArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/{ENDPOINT}",
            "EndpointConfigName": config, "EndpointStatus": status, "CreationTime": "2026-01-01T00:00:00Z",
            "LastModifiedTime": "2026-01-01T00:00:00Z"}


def _exists(stub: Stubber, operation: str, name: str) -> None:
    if operation == "describe_model":
        stub.add_response(operation, {"ModelName": name, "CreationTime": "2026-01-01T00:00:00Z",
                                      "ModelArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model/{name}"})
    else:
        stub.add_response(operation, {"EndpointConfigName": name, "ProductionVariants": [{"VariantName": "AllTraffic"}],
                                      "CreationTime": "2026-01-01T00:00:00Z",
                                      "EndpointConfigArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint-config/"
                                                           f"{name}"})


def test_names_requests_and_role():
    names = deployment_names(_package(3), ENDPOINT)
    assert (names.model, names.endpoint_config, names.endpoint) == (f"{GROUP}-v3", f"{GROUP}-v3", ENDPOINT)
    long = deployment_names({**_package(12345), "ModelPackageGroupName": "a-" * 31 + "b"}, "e")
    assert len(long.model) <= 63 and long.model.endswith("-v12345") and "--" not in long.model
    assert endpoint_name(RegistryConfig(), "storyboard") == ENDPOINT
    assert endpoint_name(RegistryConfig(endpoint={"name": "live"}), "storyboard") == "live"
    create = model_request(_package(3), names.model, ROLE)
    assert request_problems("sagemaker", "CreateModel", create) == []
    container = create["PrimaryContainer"]
    assert container["ModelDataUrl"].endswith("job-3/output/model.tar.gz") and container["Image"] == IMAGE
    assert container["AdditionalModelDataSources"][0]["ChannelName"] == "base_model"
    assert create["Tags"] == [{"Key": "storyboard:model-package-arn", "Value": _package(3)["ModelPackageArn"]}]
    config = endpoint_config_request(names.endpoint_config, names.model, EndpointConfig(initial_instance_count=2))
    assert request_problems("sagemaker", "CreateEndpointConfig", config) == []
    assert config["ProductionVariants"][0] == {"VariantName": "AllTraffic", "ModelName": names.model,
                                                    "InstanceType": "ml.g5.2xlarge", "InitialInstanceCount": 2,
                                                    "InitialVariantWeight": 1.0}
    recorded = _package(3, ExecutionRoleArn="arn:aws:iam::123456789012:role/recorded")
    assert execution_role(SETTINGS, recorded, ROLE) == "arn:aws:iam::123456789012:role/recorded"
    assert execution_role(EndpointConfig(role_arn=ROLE), recorded) == ROLE
    assert execution_role(SETTINGS, _package(3), None, ROLE) == ROLE and execution_role(SETTINGS, _package(3)) is None
    with pytest.raises(InputError, match="group and version"):
        deployment_names({"ModelPackageArn": "arn:x"}, ENDPOINT)


def test_approve_replace_reject_against_sagemaker(aws_env):
    sm = boto3.client("sagemaker", region_name="us-east-1")
    deployment, registry = SageMakerEndpointDeployment(sm), Recorder()
    v1, v2 = _package(1), _package(2)
    n1, n2 = f"{GROUP}-v1", f"{GROUP}-v2"

    def status_change(package: dict):
        return on_endpoint_package_status_change(package, SETTINGS, ENDPOINT, deployment, registry, ROLE)

    with Stubber(sm) as stub:  # first approval: model, configuration and endpoint are created
        _missing(stub, "describe_endpoint")
        _missing(stub, "describe_model")
        stub.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model/{n1}"},
                          model_request(v1, n1, ROLE))
        _missing(stub, "describe_endpoint_config")
        stub.add_response("create_endpoint_config", {"EndpointConfigArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:"
                                                                          f"endpoint-config/{n1}"},
                          endpoint_config_request(n1, n1, SETTINGS))
        stub.add_response("create_endpoint", {"EndpointArn": _endpoint(n1)["EndpointArn"]},
                          {"EndpointName": ENDPOINT, "EndpointConfigName": n1,
                           "Tags": [{"Key": "storyboard:model-package-arn", "Value": v1["ModelPackageArn"]}]})
        stub.add_response("describe_endpoint", _endpoint(n1, "Creating"))  # clean-up waits for InService
        action = status_change(v1)
        stub.assert_no_pending_responses()
    assert action.action == "created" and action.cleaned == ()
    assert registry.metadata[v1["ModelPackageArn"]] == {"EndpointName": ENDPOINT, "EndpointConfigName": n1,
                                                        "SageMakerModelName": n1, "DeploymentStatus": "Deployed"}
    v1 = _package(1, **registry.metadata[v1["ModelPackageArn"]])

    with Stubber(sm) as stub:  # the same event again: nothing new is created
        stub.add_response("describe_endpoint", _endpoint(n1, "Creating"))
        stub.add_response("describe_endpoint", _endpoint(n1, "Creating"))
        _exists(stub, "describe_model", n1)
        _exists(stub, "describe_endpoint_config", n1)
        stub.add_response("describe_endpoint", _endpoint(n1, "Creating"))
        assert status_change(v1).action == "exists"
        stub.assert_no_pending_responses()

    with Stubber(sm) as stub:  # a later approval replaces the deployment, then cleans up the replaced one
        stub.add_response("describe_endpoint", _endpoint(n1))
        _missing(stub, "describe_model")
        stub.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model/{n2}"},
                          model_request(v2, n2, ROLE))
        _missing(stub, "describe_endpoint_config")
        stub.add_response("create_endpoint_config", {"EndpointConfigArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:"
                                                                          f"endpoint-config/{n2}"},
                          endpoint_config_request(n2, n2, SETTINGS))
        stub.add_response("update_endpoint", {"EndpointArn": _endpoint(n2)["EndpointArn"]},
                          {"EndpointName": ENDPOINT, "EndpointConfigName": n2})
        stub.add_response("describe_endpoint", _endpoint(n2))
        stub.add_response("list_endpoint_configs", {"EndpointConfigs": [
            {"EndpointConfigName": n, "EndpointConfigArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint-config/{n}",
             "CreationTime": "2026-01-01T00:00:00Z"} for n in (n1, n2)]},
            {"NameContains": f"{GROUP}-v", "MaxResults": 100})
        stub.add_response("delete_endpoint_config", {}, {"EndpointConfigName": n1})
        stub.add_response("list_models", {"Models": [
            {"ModelName": n, "ModelArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model/{n}",
             "CreationTime": "2026-01-01T00:00:00Z"} for n in (n1, n2, f"{GROUP}-v2-manual")]},
            {"NameContains": f"{GROUP}-v", "MaxResults": 100})
        stub.add_response("delete_model", {}, {"ModelName": n1})  # not v2 (live), not -v2-manual (not ours)
        action = status_change(v2)
        stub.assert_no_pending_responses()
    assert action.action == "updated" and action.cleaned == (f"endpoint_config {n1}", f"model {n1}")

    with Stubber(sm) as stub:  # a repeated event of the replaced package does not roll back
        stub.add_response("describe_endpoint", _endpoint(n2))
        assert status_change(v1).action == "superseded"
        stub.assert_no_pending_responses()

    rejected = _package(2, "Rejected", **registry.metadata[v2["ModelPackageArn"]])
    with Stubber(sm) as stub:  # rejecting the deployed package deletes its endpoint, configuration and model
        stub.add_response("describe_endpoint", _endpoint(n2))
        stub.add_response("delete_endpoint", {}, {"EndpointName": ENDPOINT})
        _exists(stub, "describe_endpoint_config", n2)
        stub.add_response("delete_endpoint_config", {}, {"EndpointConfigName": n2})
        _exists(stub, "describe_model", n2)
        stub.add_response("delete_model", {}, {"ModelName": n2})
        action = on_endpoint_package_status_change(rejected, SETTINGS, ENDPOINT, deployment, registry)
        stub.assert_no_pending_responses()
    assert action.action == "deleted" and "endpoint " + ENDPOINT in action.reason
    assert registry.metadata[v2["ModelPackageArn"]]["DeploymentStatus"] == "Removed"
    with Stubber(sm) as stub:  # and again: nothing is left to delete
        _missing(stub, "describe_endpoint")
        _missing(stub, "describe_endpoint_config")
        _missing(stub, "describe_model")
        assert on_endpoint_package_status_change(rejected, SETTINGS, ENDPOINT, deployment).action == "none"
        stub.assert_no_pending_responses()


def test_rejecting_a_package_that_is_not_deployed_keeps_the_endpoint(aws_env):
    sm = boto3.client("sagemaker", region_name="us-east-1")
    with Stubber(sm) as stub:
        stub.add_response("describe_endpoint", _endpoint(f"{GROUP}-v1"))
        _exists(stub, "describe_endpoint_config", f"{GROUP}-v4")
        stub.add_response("delete_endpoint_config", {}, {"EndpointConfigName": f"{GROUP}-v4"})
        _missing(stub, "describe_model")
        action = on_endpoint_package_status_change(_package(4, "Rejected"), SETTINGS, ENDPOINT,
                                                   SageMakerEndpointDeployment(sm))
        stub.assert_no_pending_responses()
    assert action.action == "deleted" and ENDPOINT not in action.reason
    kept = on_endpoint_package_status_change(_package(4, "Rejected"), EndpointConfig(delete_on_reject=False),
                                             ENDPOINT, SageMakerEndpointDeployment(sm))
    assert kept.action == "none"


def test_busy_endpoint_bad_settings_and_missing_role_change_nothing(aws_env):
    sm = boto3.client("sagemaker", region_name="us-east-1")
    deployment = SageMakerEndpointDeployment(sm)
    with Stubber(sm) as stub:
        stub.add_response("describe_endpoint", _endpoint(f"{GROUP}-v1", "Updating"))
        _exists(stub, "describe_model", f"{GROUP}-v3")
        _exists(stub, "describe_endpoint_config", f"{GROUP}-v3")
        with pytest.raises(EndpointBusyError, match="Updating"):
            on_endpoint_package_status_change(_package(3), SETTINGS, ENDPOINT, deployment, role_arn=ROLE)
        stub.assert_no_pending_responses()
    with Stubber(sm):  # no response queued: any call would fail the test
        with pytest.raises(InputError, match="instance_type"):
            on_endpoint_package_status_change(_package(3), EndpointConfig(instance_type="ml.p4d.24xlarge"),
                                              ENDPOINT, deployment, role_arn=ROLE)
        with pytest.raises(InputError, match="execution role"):
            on_endpoint_package_status_change(_package(3), SETTINGS, ENDPOINT, deployment)
        for package in (_package(3, "PendingManualApproval"),):
            assert on_endpoint_package_status_change(package, SETTINGS, ENDPOINT, deployment).action == "none"
        assert on_endpoint_package_status_change(_package(3), EndpointConfig(enabled=False), ENDPOINT,
                                                 deployment).action == "none"
    no_container = {**_package(3), "InferenceSpecification": {"Containers": []}}
    with pytest.raises(InputError, match="InferenceSpecification"):
        model_request(no_container, "m", ROLE)


def test_planned_deployment_validates_and_keeps_state(tmp_path):
    planned = PlannedEndpointDeployment(tmp_path)
    with pytest.raises(InputError, match="InstanceType"):
        planned.create_endpoint_config({"EndpointConfigName": "c", "ProductionVariants": [
            {"VariantName": "AllTraffic", "ModelName": "m", "InstanceType": "ml.bogus.huge",
             "InitialInstanceCount": 1}]})
    assert not planned.requests_path.exists() and not planned.endpoint_config_exists("c")
    local = _package(1)
    local["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] = str(tmp_path / "model.tar.gz")
    planned.create_model(model_request(local, "m-v1", ROLE))
    [row] = [json.loads(line) for line in planned.requests_path.read_text().splitlines()]
    assert row["operation"] == "CreateModel" and row["placeholders"] == [str(tmp_path / "model.tar.gz")]
    assert row["request"]["PrimaryContainer"]["ModelDataUrl"] == str(tmp_path / "model.tar.gz")  # the exact request
    assert planned.model_exists("m-v1") and planned.list_names("model", "m-v") == ["m-v1"]


def _register_lora(runs: Path, config, execution: str, artifact: Path, base: Path) -> str:
    event = {"FineTuneBackend": "sagemaker", "ModelDataUrl": str(artifact), "TrainingJobName": f"job-{execution}",
             "BaseModelS3Uri": str(base), "InferenceImageUri": IMAGE, "InferenceInstanceTypes": "ml.g5.2xlarge",
             "ModelPackageGroupName": GROUP, "EvaluationReportUri": str(runs / execution / "evaluation.json"),
             "PipelineExecutionArn": f"local:{execution}", "DryRun": "false", "CharacterSimilarity": "0.5",
             "ImprovementOverBase": "0.01"}
    outputs = LAMBDA_HANDLERS["storyboard-register-model"](event, runs / execution / "RegisterModel", config)
    assert outputs["Registered"] == "true", outputs
    return outputs["ModelPackageArn"]


def _approve(capsys, arn: str, runs: Path, *extra: str) -> dict:
    assert main(["approve", arn, "--local", "--runs", str(runs), *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_local_approve_command_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STORYBOARD_ROLE_ARN", raising=False)
    runs, config = tmp_path / "runs", parse_config({})
    base = tmp_path / "base"  # a stand-in folder: the plan records paths, nothing is read
    arns = [_register_lora(runs, config, f"exec-{i}", runs / f"exec-{i}" / "FineTune" / "model.tar.gz", base)
            for i in (1, 2)]
    assert arns[0].endswith("/1") and arns[1].endswith("/2")  # one registry for every local execution

    first = _approve(capsys, arns[0], runs)
    assert first["action"] == "created" and first["endpointName"] == ENDPOINT
    assert "nothing was deployed" in first["note"]
    assert _approve(capsys, arns[0], runs)["action"] == "exists"
    second = _approve(capsys, arns[1], runs)
    assert second["action"] == "updated" and second["cleanedUp"] == [f"endpoint_config {GROUP}-v1", f"model {GROUP}-v1"]
    state = json.loads((runs / "deployments" / "deployment_state.json").read_text())
    assert state["endpoints"][ENDPOINT]["EndpointConfigName"] == f"{GROUP}-v2"
    assert list(state["models"]) == [f"{GROUP}-v2"] and list(state["endpoint_configs"]) == [f"{GROUP}-v2"]
    model = state["models"][f"{GROUP}-v2"]
    assert model["ExecutionRoleArn"].endswith("storyboard-endpoint-role-placeholder")
    assert model["PrimaryContainer"]["ModelDataUrl"] == str(runs / "exec-2" / "FineTune" / "model.tar.gz")

    rejected = _approve(capsys, arns[1], runs, "--reject")
    assert rejected["action"] == "deleted"
    state = json.loads((runs / "deployments" / "deployment_state.json").read_text())
    assert state == {"models": {}, "endpoint_configs": {}, "endpoints": {}}
    operations = [json.loads(line)["operation"] for line in
                  (runs / "deployments" / "deployment_requests.jsonl").read_text().splitlines()]
    assert operations == ["CreateModel", "CreateEndpointConfig", "CreateEndpoint",  # approve v1
                          "CreateModel", "CreateEndpointConfig", "UpdateEndpoint",  # approve v2
                          "DeleteEndpointConfig", "DeleteModel",  # clean up v1
                          "DeleteEndpoint", "DeleteEndpointConfig", "DeleteModel"]  # reject v2
    registry = json.loads((runs / "registry.json").read_text())
    meta = {p["ModelPackageArn"]: p["CustomerMetadataProperties"] for p in registry["packages"]}
    assert meta[arns[0]]["DeploymentStatus"] == "Deployed" and meta[arns[1]]["DeploymentStatus"] == "Removed"
    assert [p["ModelApprovalStatus"] for p in registry["packages"]] == ["Approved", "Rejected"]

    assert main(["approve", arns[0].replace("/1", "/9"), "--local", "--runs", str(runs)]) == 2
    assert "no model package" in capsys.readouterr().err


def test_cloud_approve_command_sets_the_status(aws_env, capsys, tmp_path, monkeypatch):
    from moto import mock_aws

    monkeypatch.chdir(tmp_path)
    with mock_aws():
        sm = boto3.client("sagemaker", region_name="us-east-1")
        sm.create_model_package_group(ModelPackageGroupName=GROUP)
        arn = sm.create_model_package(ModelPackageGroupName=GROUP, ModelApprovalStatus="PendingManualApproval",
                                      InferenceSpecification=_package(1)["InferenceSpecification"])["ModelPackageArn"]
        assert main(["approve", arn, "--reject", "--region", "us-east-1", "--description", "blurry"]) == 0
        assert json.loads(capsys.readouterr().out)["status"] == "Rejected"
        package = sm.describe_model_package(ModelPackageName=arn)
        assert package["ModelApprovalStatus"] == "Rejected" and package["ApprovalDescription"] == "blurry"
