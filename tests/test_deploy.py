"""`storyboard deploy` then `storyboard upsert` / `start` against a moto server (real HTTP), and the change-set
logic of pipeline/infra/stack.py against botocore's Stubber.

moto's CloudFormation does not create ``AWS::S3::BucketPolicy``, ``AWS::SQS::QueuePolicy``,
``AWS::SageMaker::ModelPackageGroup`` or ``AWS::Lambda::EventInvokeConfig`` (it warns and skips them), and it
computes a stack's outputs when a change set is created, before its resources exist, so a stack made through a
change set has empty outputs. The ``moto_outputs_after_execute`` fixture recomputes them after each execution
(what CloudFormation does); every output value then comes from the template and the resources moto made.
"""

from __future__ import annotations

import json
import urllib.request
import warnings
from pathlib import Path

import boto3
import pytest
import yaml
from botocore.stub import ANY, Stubber

from core.errors import InputError
from pipeline.commands.cli import main
from pipeline.infra import stack as stack_module
from pipeline.infra.outputs import REQUIRED_OUTPUTS, foundation_model_id

REPO = Path(__file__).resolve().parents[1]
ACCOUNT = "123456789012"  # moto's account
PLACEHOLDER = "000000000000"


@pytest.fixture
def moto_outputs_after_execute(monkeypatch):
    from moto.cloudformation import models

    original = models.CloudFormationBackend.execute_change_set

    def execute_change_set(self, change_set_name, stack_name=None):
        original(self, change_set_name, stack_name)
        for stack in self.stacks.values():
            stack._parse_template()  # the executed template; then its outputs, as CloudFormation computes them
            stack.output_map = stack._create_output_map()

    monkeypatch.setattr(models.CloudFormationBackend, "execute_change_set", execute_change_set)


@pytest.fixture
def aws(moto_url, monkeypatch, tmp_path, moto_outputs_after_execute):
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).read()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_ENDPOINT_URL": moto_url, "AWS_CONFIG_FILE": str(tmp_path / "none"),
                       "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "STORYBOARD_ROLE_ARN", "STORYBOARD_BUCKET"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    warnings.filterwarnings("ignore", message=".*not supported by moto's CloudFormation.*")
    return moto_url


def write_config(tmp_path: Path) -> Path:
    data = yaml.safe_load((REPO / "pipeline.yaml").read_text())
    data["aws"] = {"region": "us-east-1", "max_attempts": 1}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def push_fake_lambda_image(project: str = "storyboard", tag: str = "latest") -> str:
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                           "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1,
                                      "digest": "sha256:" + "a" * 64}, "layers": []})
    boto3.client("ecr").put_image(repositoryName=f"{project}-lambda", imageManifest=manifest, imageTag=tag)
    image = boto3.client("ecr").describe_images(repositoryName=f"{project}-lambda")["imageDetails"][0]
    return image["imageDigest"]


def test_deploy_then_upsert_leaves_no_placeholder(aws, tmp_path, capsys):
    path = write_config(tmp_path)
    assert main(["deploy", "--config", str(path), "--poll-seconds", "1"]) == 0
    first = capsys.readouterr().out
    assert "stack storyboard created" in first and "no Lambda image storyboard-lambda:latest yet" in first
    cfn = boto3.client("cloudformation")
    described = cfn.describe_stacks(StackName="storyboard")["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}
    assert "RegisterModelFunctionArn" not in outputs  # no image, no functions
    # upsert before the functions exist names the missing output and the fix
    assert main(["upsert", "--config", str(path), "--stack-name", "storyboard", "--no-validate-role"]) == 2
    assert "no output RegisterModelFunctionArn (sagemaker.register_function_arn)" in capsys.readouterr().err

    # The same deploy again: nothing to change.
    assert main(["deploy", "--config", str(path), "--poll-seconds", "1"]) == 0
    assert "stack storyboard unchanged (nothing to change)" in capsys.readouterr().out

    digest = push_fake_lambda_image()
    assert main(["deploy", "--config", str(path), "--poll-seconds", "1"]) == 0
    assert "stack storyboard updated" in capsys.readouterr().out
    stack = cfn.describe_stacks(StackName="storyboard")["Stacks"][0]
    params = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    assert params["LambdaImageUri"].endswith(f"storyboard-lambda@{digest}")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert not [key for key in REQUIRED_OUTPUTS if not outputs.get(key)]
    functions = {f["FunctionName"]: f for f in boto3.client("lambda").list_functions()["Functions"]}
    assert set(functions) >= {"storyboard-callback-consumer", "storyboard-register-model", "storyboard-approval",
                              "storyboard-reconciler", "storyboard-job-state", "storyboard-human-loop-status"}
    assert outputs["RegisterModelFunctionArn"] == functions["storyboard-register-model"]["FunctionArn"]
    queue = boto3.client("sqs").get_queue_attributes(QueueUrl=outputs["CallbackQueueUrl"], AttributeNames=["All"])
    attributes = queue["Attributes"]
    assert int(attributes["VisibilityTimeout"]) >= 6 * functions["storyboard-callback-consumer"]["Timeout"]
    assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] == 5

    assert main(["upsert", "--config", str(path), "--stack-name", "storyboard", "--no-validate-role"]) == 0
    upsert_out = capsys.readouterr().out
    described = boto3.client("sagemaker").describe_pipeline(PipelineName="storyboard-pipeline")
    definition = described["PipelineDefinition"]
    assert PLACEHOLDER not in definition
    assert described["RoleArn"] == outputs["PipelineRoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/storyboard-pipeline"
    for key in ("CallbackQueueUrl", "RegisterModelFunctionArn", "ProcessingImageUri", "TrainingImageUri",
                "InferenceImageUri", "BucketName"):
        assert outputs[key] in definition, key
    assert "sagemaker-us-east-1-" not in definition  # the SDK's default bucket is not used

    # The functions' configuration carries the stack's names too.
    config_uri = outputs["LambdaConfigUri"]
    assert config_uri in upsert_out
    bucket, key = config_uri[len("s3://"):].split("/", 1)
    lambda_config = yaml.safe_load(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    assert lambda_config["review"]["role_arn"] == outputs["A2IRoleArn"]
    assert lambda_config["finetune"]["role_arn"] == outputs["BedrockCustomizationRoleArn"]
    assert lambda_config["registry"]["model_package_group_name"] == outputs["ModelPackageGroupName"]
    assert lambda_config["sagemaker"]["register_function_arn"] == outputs["RegisterModelFunctionArn"]
    assert PLACEHOLDER not in json.dumps(lambda_config)

    assert main(["start", "--config", str(path), "--stack-name", "storyboard"]) == 0
    assert "execution: arn:aws:sagemaker:us-east-1:" in capsys.readouterr().out


def test_upsert_and_start_name_a_missing_stack(aws, tmp_path, capsys):
    path = write_config(tmp_path)
    assert main(["upsert", "--config", str(path), "--stack-name", "nowhere", "--no-validate-role"]) == 2
    assert "stack nowhere does not exist" in capsys.readouterr().err
    assert main(["start", "--config", str(path), "--stack-name", "nowhere"]) == 2
    assert "`storyboard deploy --stack-name nowhere`" in capsys.readouterr().err


def test_deploy_refuses_unknown_and_malformed_parameters(aws, tmp_path, capsys):
    path = write_config(tmp_path)
    assert main(["deploy", "--config", str(path), "--parameter", "NoSuchParameter=1"]) == 2
    assert "unknown template parameter(s) ['NoSuchParameter']" in capsys.readouterr().err
    assert main(["deploy", "--config", str(path), "--parameter", "WorkteamArn"]) == 2
    assert "expected Key=Value" in capsys.readouterr().err
    assert boto3.client("cloudformation").list_stacks()["StackSummaries"] == []


def _stubbed_cfn():
    client = boto3.client("cloudformation", region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")
    return client, Stubber(client)


def test_change_set_without_changes_is_deleted_and_reported():
    """The real service fails an empty change set (it does not refuse it): deleted, reported as NONE."""
    cfn, stub = _stubbed_cfn()
    stack = {"StackName": "sb", "StackId": "arn:aws:cloudformation:us-east-1:1:stack/sb/1",
             "CreationTime": "2026-01-01", "StackStatus": "UPDATE_COMPLETE",
             "Parameters": [{"ParameterKey": "ProjectName", "ParameterValue": "sb"}],
             "Outputs": [{"OutputKey": "BucketName", "OutputValue": "b"}]}
    declared = {"ProjectName": {}, "ImageTag": {}}
    name = stack_module.change_set_name("sb", "{}", {"ProjectName": "sb"})
    stub.add_response("describe_stacks", {"Stacks": [stack]}, {"StackName": "sb"})
    stub.add_response("describe_stacks", {"Stacks": [stack]}, {"StackName": "sb"})
    stub.add_client_error("describe_change_set", "ChangeSetNotFound", expected_params={"StackName": "sb",
                                                                                       "ChangeSetName": name})
    stub.add_response("create_change_set", {"Id": "cs", "StackId": stack["StackId"]}, {
        "StackName": "sb", "ChangeSetName": name, "ChangeSetType": "UPDATE", "TemplateBody": "{}",
        "Parameters": [{"ParameterKey": "ProjectName", "ParameterValue": "sb"}],
        "Capabilities": ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
        "ClientToken": name, "Description": ANY})
    failed = {"ChangeSetName": name, "StackName": "sb", "Status": "FAILED", "ExecutionStatus": "UNAVAILABLE",
              "StatusReason": "The submitted information didn't contain changes. Submit different information "
                              "to create a change set."}
    stub.add_response("describe_change_set", failed, {"StackName": "sb", "ChangeSetName": name})  # waiter
    stub.add_response("describe_change_set", failed, {"StackName": "sb", "ChangeSetName": name})
    stub.add_response("describe_change_set", failed, {"StackName": "sb", "ChangeSetName": name})  # before delete
    stub.add_response("delete_change_set", {}, {"StackName": "sb", "ChangeSetName": name})
    stub.add_response("describe_stacks", {"Stacks": [stack]}, {"StackName": "sb"})
    with stub:
        result = stack_module.deploy_stack(cfn, "sb", "{}", declared, {"ProjectName": "sb"}, delay_s=1, max_attempts=1)
    stub.assert_no_pending_responses()
    assert result.action == "NONE" and result.outputs == {"BucketName": "b"}


def test_update_keeps_previous_values_of_parameters_not_given():
    params = stack_module.request_parameters({"A": {}, "B": {}, "C": {}}, {"A": "1"}, updating=True,
                                             previous={"A", "B"})
    assert params == [{"ParameterKey": "A", "ParameterValue": "1"}, {"ParameterKey": "B", "UsePreviousValue": True}]
    assert stack_module.request_parameters({"A": {}}, {"A": "1"}, updating=False, previous=set()) == [
        {"ParameterKey": "A", "ParameterValue": "1"}]


def test_change_set_name_is_deterministic_and_valid():
    a = stack_module.change_set_name("storyboard", "{}", {"A": "1"})
    assert a == stack_module.change_set_name("storyboard", "{}", {"A": "1"})
    assert a != stack_module.change_set_name("storyboard", "{}", {"A": "2"})
    assert len(a) <= 128 and a[0].isalpha()


def test_rollback_complete_stack_is_refused_with_the_fix():
    cfn, stub = _stubbed_cfn()
    stub.add_response("describe_stacks", {"Stacks": [{"StackName": "sb", "CreationTime": "2026-01-01",
                                                      "StackStatus": "ROLLBACK_COMPLETE"}]}, {"StackName": "sb"})
    with stub, pytest.raises(InputError, match="ROLLBACK_COMPLETE.*delete-stack"):
        stack_module.deploy_stack(cfn, "sb", "{}", {}, {})


@pytest.mark.parametrize("model_id, expected", [("us.amazon.nova-2-lite-v1:0", "amazon.nova-2-lite-v1:0"),
                                                ("global.amazon.nova-2-lite-v1:0", "amazon.nova-2-lite-v1:0"),
                                                ("amazon.nova-pro-v1:0", "amazon.nova-pro-v1:0")])
def test_foundation_model_of_an_inference_profile(model_id, expected):
    assert foundation_model_id(model_id) == expected
