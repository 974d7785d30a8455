"""The Bedrock path evaluates its own model: a temporary Provisioned Throughput for one execution's custom model.

A custom Nova Canvas model runs only on Provisioned Throughput (DESIGN §5), so before Evaluate the pipeline
creates one, no commitment, ``modelUnits`` 1, named after the execution (:func:`evaluation_throughput_name`),
checks that it serves this run's ``CustomModelArn`` (``get_provisioned_model_throughput`` ``modelArn``, and its
``foundationModelArn`` against the custom model's ``baseModelArn``), and deletes it after Evaluate or when the
execution ends in any other way. The name is deterministic and the create request carries a client token derived
from it, so a repeated message or event creates nothing new, and a clean-up that knows only the execution ARN
finds the throughput.

Limits (Bedrock API reference ``CreateProvisionedModelThroughput``): ``provisionedModelName`` at most 63
characters ``([0-9a-zA-Z][_-]?)+``; ``clientRequestToken`` 1 to 256 characters ``[a-zA-Z0-9](-*[a-zA-Z0-9])*``;
tag values at most 256. Status values: Creating, InService, Updating, Failed. Creation takes about 20 to 30
minutes (DESIGN §5), so completion is polled by the reconciler, never waited on in a Lambda.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from core.errors import InputError

log = logging.getLogger(__name__)

NAME_MAX = 63
NAME_INFIX = "-eval-"
TAG_PURPOSE = "storyboard:purpose"
PURPOSE = "evaluation"
TAG_EXECUTION = "storyboard:pipeline-execution"
TAG_CALLBACK_TOKEN = "storyboard:callback-token"
TAG_ANSWERED = "storyboard:callback-answered"
TAG_CUSTOM_MODEL = "storyboard:custom-model"
NOT_FOUND = ("ResourceNotFoundException",)


def execution_id(execution_arn: str) -> str:
    """The execution's id, the ARN's last segment (``.../execution/<id>``).

    Raises:
        InputError: ``execution_arn`` is empty.
    """
    text = (execution_arn or "").strip().rstrip("/")
    if not text:
        raise InputError("the evaluation throughput needs PipelineExecutionArn (Execution.PipelineExecutionArn)")
    return text.rsplit("/", 1)[-1]


def evaluation_throughput_name(prefix: str, execution_arn: str) -> str:
    """``<prefix>-eval-<execution id>``, cleaned to ``([0-9a-zA-Z][_-]?)+`` and at most 63 characters (the id is
    kept whole; the prefix is cut)."""
    ident = re.sub(r"[^0-9a-zA-Z]", "", execution_id(execution_arn))[:40] or "x"
    clean = re.sub(r"[^0-9a-zA-Z]+", "-", prefix).strip("-") or "storyboard"
    return f"{clean[:NAME_MAX - len(NAME_INFIX) - len(ident)].rstrip('-')}{NAME_INFIX}{ident}"


def create_request(name: str, custom_model_arn: str, execution_arn: str, callback_token: str) -> dict[str, Any]:
    """The ``create_provisioned_model_throughput`` request: 1 model unit, no ``commitmentDuration`` (no
    commitment), a client token derived from the name (a repeat is one request), tags naming the purpose, the
    execution and the callback token (the reconciler answers the step from them)."""
    tags = [{"key": TAG_PURPOSE, "value": PURPOSE}, {"key": TAG_CALLBACK_TOKEN, "value": callback_token}]
    for key, value in ((TAG_EXECUTION, execution_arn), (TAG_CUSTOM_MODEL, custom_model_arn)):
        if len(value) <= 256:
            tags.append({"key": key, "value": value})
    return {"clientRequestToken": "eval-" + hashlib.sha256(name.encode()).hexdigest()[:48], "modelUnits": 1,
            "provisionedModelName": name, "modelId": custom_model_arn, "tags": tags}


@dataclass(frozen=True)
class ThroughputState:
    """One throughput as ``get_provisioned_model_throughput`` returns it: ARN, status (Creating, InService,
    Updating, Failed), the model it serves now and the one it is moving to, its base model, and the failure
    message where Failed."""

    arn: str
    name: str
    status: str
    model_arn: str
    desired_model_arn: str
    foundation_model_arn: str
    failure_message: str = ""

    @classmethod
    def from_response(cls, r: dict[str, Any]) -> ThroughputState:
        """Parse ``get_provisioned_model_throughput``'s answer."""
        return cls(str(r.get("provisionedModelArn") or ""), str(r.get("provisionedModelName") or ""),
                   str(r.get("status") or ""), str(r.get("modelArn") or ""), str(r.get("desiredModelArn") or ""),
                   str(r.get("foundationModelArn") or ""), str(r.get("failureMessage") or ""))


class EvaluationThroughputs:
    """The evaluation throughput on Bedrock (a boto3 ``bedrock`` client)."""

    def __init__(self, bedrock_client: Any) -> None:
        self.bedrock = bedrock_client

    def get(self, name_or_arn: str) -> ThroughputState | None:
        """The throughput, or ``None`` when there is none of that name."""
        try:
            return ThroughputState.from_response(
                self.bedrock.get_provisioned_model_throughput(provisionedModelId=name_or_arn))
        except ClientError as err:
            if err.response["Error"].get("Code") in NOT_FOUND:
                return None
            raise

    def ensure(self, name: str, custom_model_arn: str, execution_arn: str, callback_token: str) -> ThroughputState:
        """The throughput called ``name``, created for ``custom_model_arn`` when missing, checked to serve it.

        Raises:
            InputError: the throughput exists and serves another model, or its base model is not the custom
                model's (:meth:`check_serves`).
        """
        found = self.get(name)
        if found is None:
            request = create_request(name, custom_model_arn, execution_arn, callback_token)
            arn = self.bedrock.create_provisioned_model_throughput(**request)["provisionedModelArn"]
            log.info("created evaluation throughput %s (%s) for %s", name, arn, custom_model_arn)
            found = self.get(arn) or ThroughputState(arn, name, "Creating", custom_model_arn, custom_model_arn, "")
        self.check_serves(found, custom_model_arn)
        return found

    def check_serves(self, state: ThroughputState, custom_model_arn: str) -> None:
        """Check that ``state`` serves ``custom_model_arn`` (``modelArn`` or, while updating,
        ``desiredModelArn``) and that its ``foundationModelArn`` is the custom model's ``baseModelArn``
        (``get_custom_model``).

        Raises:
            InputError: it serves another model or another base model: evaluating it would score the wrong model.
        """
        if custom_model_arn not in (state.model_arn, state.desired_model_arn):
            raise InputError(f"provisioned throughput {state.name} serves {state.model_arn or 'no model'}, not this "
                             f"run's custom model {custom_model_arn}: delete it (it is named after the execution) "
                             f"and retry")
        if state.foundation_model_arn:
            base = str(self.bedrock.get_custom_model(modelIdentifier=custom_model_arn).get("baseModelArn") or "")
            if base and base != state.foundation_model_arn:
                raise InputError(f"provisioned throughput {state.name} runs base model {state.foundation_model_arn}, "
                                 f"but {custom_model_arn} was fine-tuned from {base}")

    def tags(self, arn: str) -> dict[str, str]:
        """The throughput's tags as a dict."""
        return {t["key"]: t["value"] for t in self.bedrock.list_tags_for_resource(resourceARN=arn).get("tags") or []}

    def tag(self, arn: str, tags: dict[str, str]) -> None:
        """Add or replace tags."""
        self.bedrock.tag_resource(resourceARN=arn, tags=[{"key": k, "value": v} for k, v in tags.items()])

    def delete(self, name_or_arn: str) -> bool:
        """Delete the throughput; ``False`` when there was none.

        Raises:
            ClientError: Bedrock refused, e.g. while it is still Creating (retry later: the reconciler does).
        """
        try:
            self.bedrock.delete_provisioned_model_throughput(provisionedModelId=name_or_arn)
            log.info("deleted evaluation throughput %s", name_or_arn)
            return True
        except ClientError as err:
            if err.response["Error"].get("Code") in NOT_FOUND:
                return False
            raise

    def list_evaluation(self, prefix: str) -> list[dict[str, Any]]:
        """Summaries of every throughput whose name contains ``<prefix>-eval-`` (all pages)."""
        out, token = [], None
        while True:
            kwargs: dict[str, Any] = {"nameContains": f"{prefix}{NAME_INFIX}", "maxResults": 100}
            if token:
                kwargs["nextToken"] = token
            page = self.bedrock.list_provisioned_model_throughputs(**kwargs)
            out += list(page.get("provisionedModelSummaries") or [])
            token = page.get("nextToken")
            if not token:
                return out
