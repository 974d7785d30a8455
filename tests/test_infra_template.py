"""pipeline/infra/template.yaml: least-privilege IAM, the queue/DLQ/event-source rules of issue 9, the resources
the other handlers rely on, and cfn-lint with zero findings (checkov runs in `make iac-check`)."""

from __future__ import annotations

import re

import pytest

from pipeline.infra.cfn_template import TEMPLATE_PATH, load_template, template_body

TEMPLATE = load_template()
RESOURCES = TEMPLATE["Resources"]


def _statements():
    """Every (resource, statement) of role policies, bucket/queue policies and the key policy."""
    for name, resource in RESOURCES.items():
        props = resource.get("Properties", {})
        documents = [p["PolicyDocument"] for p in props.get("Policies", [])]
        documents += [props[k] for k in ("AssumeRolePolicyDocument", "PolicyDocument", "KeyPolicy") if k in props]
        for document in documents:
            for statement in document["Statement"]:
                yield name, statement


def _actions(statement):
    actions = statement.get("Action", [])
    return [actions] if isinstance(actions, str) else list(actions)


def test_no_allow_statement_grants_a_wildcard_action():
    offenders = [(name, action) for name, statement in _statements() if statement["Effect"] == "Allow"
                 for action in _actions(statement) if action == "*" or re.fullmatch(r"[a-z0-9-]+:\*", action)]
    assert offenders == []
    assert not [s for _, s in _statements() if "NotAction" in s]
    # the check itself sees the policies: there are Allow statements with actions to look at
    assert sum(1 for _, s in _statements() if s["Effect"] == "Allow") > 30


def test_resource_wildcards_only_for_actions_without_resource_scope():
    """``Resource: "*"`` only where IAM offers no resource type (or in the key policy, where it means this key)."""
    unscoped = {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData", "rekognition:DetectLabels",
                "xray:PutTraceSegments", "xray:PutTelemetryRecords", "bedrock:ListProvisionedModelThroughputs",
                "bedrock:ListCustomModels", "sagemaker:ListModels", "sagemaker:ListEndpointConfigs"}
    for name, statement in _statements():
        if statement["Effect"] == "Allow" and statement.get("Resource") == "*" and name != "Key":
            assert set(_actions(statement)) <= unscoped, (name, statement.get("Sid"))


def test_bedrock_service_role_is_confined_to_this_accounts_customization_jobs():
    trust = RESOURCES["BedrockCustomizationRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"Service": "bedrock.amazonaws.com"}
    assert trust["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
    assert "model-customization-job/*" in trust["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"]


def test_callback_queue_outlives_the_consumer_and_redrives_to_a_dead_letter_queue():
    queue = RESOURCES["CallbackQueue"]["Properties"]
    consumer = RESOURCES["CallbackConsumer"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * consumer["Timeout"]
    assert queue["RedrivePolicy"]["maxReceiveCount"] == 5
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["CallbackDeadLetterQueue", "Arn"]}
    mapping = RESOURCES["CallbackQueueMapping"]["Properties"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["FunctionName"] == {"Ref": "CallbackConsumer"}


def test_every_rule_retries_and_keeps_undelivered_events():
    rules = {n: r["Properties"] for n, r in RESOURCES.items() if r["Type"] == "AWS::Events::Rule"}
    detail_types = {t for r in rules.values() for t in r.get("EventPattern", {}).get("detail-type", [])}
    assert detail_types == {"Model Customization Job State Change", "SageMaker A2I HumanLoop Status Change",
                            "SageMaker Model Building Pipeline Execution Status Change",
                            "SageMaker Model Package State Change", "SageMaker Endpoint State Change"}
    assert any("ScheduleExpression" in r for r in rules.values())  # the reconciler's schedule
    for name, rule in rules.items():
        for target in rule["Targets"]:
            assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["EventsDeadLetterQueue", "Arn"]}, name
            assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1, name


def test_other_engineers_permissions_are_held():
    allowed = {a for _, s in _statements() if s["Effect"] == "Allow" for a in _actions(s)}
    assert {"bedrock:GetFoundationModel", "bedrock:CreateProvisionedModelThroughput",
            "bedrock:DeleteProvisionedModelThroughput", "bedrock:UpdateProvisionedModelThroughput",
            "bedrock:DeleteCustomModel", "sagemaker:SendPipelineExecutionStepSuccess",
            "sagemaker:SendPipelineExecutionStepFailure"} <= allowed


def test_data_bucket_is_encrypted_versioned_private_tls_only_and_serves_a2i():
    bucket = RESOURCES["DataBucket"]["Properties"]
    rule = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert rule["SSEAlgorithm"] == "aws:kms"
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["CorsConfiguration"]["CorsRules"][0]["AllowedMethods"] == ["GET"]
    deny = RESOURCES["DataBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_template_body_fits_an_inline_request():
    assert len(template_body(TEMPLATE).encode("utf-8")) <= 51_200


def test_cfn_lint_reports_nothing():
    api = pytest.importorskip("cfnlint.api")
    # us-east-1, as the cfn-lint command by default: the project's Region (Nova Canvas fine-tuning)
    matches = api.lint(TEMPLATE_PATH.read_text(encoding="utf-8"), config=api.ManualArgs(regions=["us-east-1"]))
    # errors and warnings, what the cfn-lint command reports by default (informational I-rules are opt-in)
    assert [str(m) for m in matches if m.rule.id[0] in "EW"] == []
