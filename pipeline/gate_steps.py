"""The steps after Evaluate: RegisterModel (a Lambda step that creates the model package) and the gate that
decides whether it runs (CheckQuality on ``gate.status``, QualityGateFailed and, for ``finetune.backend:
bedrock``, CheckModelTrained and ModelNotTrained, which turn away a dry run before any figure is compared).
"""

from __future__ import annotations

from typing import Any

from pipeline import parameters as P
from pipeline.step_context import _Context, _lora
from pipeline.step_names import (
    CHECK_QUALITY,
    CHECK_TRAINED,
    EVALUATION_FILE,
    EVALUATION_OUTPUT,
    FAIL_NOT_TRAINED,
    FAIL_QUALITY,
    GATE_PASSED,
    GATE_STATUS_PATH,
    GATE_SUMMARY_PATH,
    IMPROVEMENT_PATH,
    REGISTER,
    REGISTER_OUTPUTS,
    SIMILARITY_PATH,
)


def _register_step(ctx: _Context, review: Any, finetune: Any, evaluate: Any, report: Any) -> Any:
    from sagemaker.core.lambda_helper import Lambda
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join, JsonGet
    from sagemaker.mlops.workflow.lambda_step import LambdaOutput, LambdaStep

    p = ctx.params
    evaluation_uri = evaluate.properties.ProcessingOutputConfig.Outputs[EVALUATION_OUTPUT].S3Output.S3Uri
    inputs: dict[str, Any] = {
        "ModelPackageGroupName": p[P.MODEL_PACKAGE_GROUP],
        "ModelApprovalStatus": "PendingManualApproval",
        "EvaluationReportUri": Join(on="/", values=[evaluation_uri, EVALUATION_FILE]),
        "ReviewedManifestUri": review.properties.Outputs["ReviewedManifestUri"],
        "PipelineExecutionArn": ExecutionVariables.PIPELINE_EXECUTION_ARN,
        "ClientToken": ExecutionVariables.PIPELINE_EXECUTION_ID,
        # figures recorded with the package (numbers become customer metadata)
        "CharacterSimilarity": JsonGet(step_name=evaluate.name, property_file=report, json_path=SIMILARITY_PATH),
        "ImprovementOverBase": JsonGet(step_name=evaluate.name, property_file=report, json_path=IMPROVEMENT_PATH),
    }
    if _lora(ctx):
        inputs.update({
            "FineTuneBackend": "sagemaker",
            "DryRun": "false",
            "ModelDataUrl": finetune.properties.ModelArtifacts.S3ModelArtifacts,
            "TrainingJobName": finetune.properties.TrainingJobName,
            "BaseModelS3Uri": p[P.BASE_MODEL_URI],
            "BaseModelId": ctx.config.finetune.lora.base_model_id,
            "InferenceImageUri": ctx.settings.inference_image_uri,
            "ExecutionRoleArn": ctx.config.registry.endpoint.role_arn or ctx.settings.role_arn,
            "InferenceInstanceTypes": ctx.config.registry.endpoint.instance_type,
        })
        description = ("Create a model package (PendingManualApproval) in the Model Registry group: the inference "
                       "image with this run's LoRA artifact (ModelDataUrl) and the base model, evaluation.json "
                       "as its ModelQuality statistics. Approve it in Studio to deploy a real-time endpoint.")
    else:
        inputs.update({
            "FineTuneBackend": "bedrock",
            "CustomModelArn": finetune.properties.Outputs["CustomModelArn"],
            "JobArn": finetune.properties.Outputs["JobArn"],
            "DryRun": finetune.properties.Outputs["DryRun"],
            "BaseModelId": p[P.BASE_MODEL],
        })
        description = ("Create a model package (PendingManualApproval) in the Model Registry group with "
                       "evaluation.json as its ModelQuality statistics and the Bedrock job and custom model "
                       "ARNs as customer metadata. Approve it in Studio to deploy.")
    return LambdaStep(
        name=REGISTER,
        lambda_func=Lambda(function_arn=ctx.settings.register_function_arn, session=ctx.session),
        inputs=inputs,
        outputs=[LambdaOutput(output_name=name) for name in REGISTER_OUTPUTS],
        display_name="Register model",
        description=description,
    )


def _gate_steps(ctx: _Context, finetune: Any, evaluate: Any, report: Any, register: Any) -> Any:
    from sagemaker.core.workflow.conditions import ConditionEquals
    from sagemaker.core.workflow.functions import Join, JsonGet
    from sagemaker.mlops.workflow.condition_step import ConditionStep
    from sagemaker.mlops.workflow.fail_step import FailStep

    p = ctx.params
    status = JsonGet(step_name=evaluate.name, property_file=report, json_path=GATE_STATUS_PATH)
    summary = JsonGet(step_name=evaluate.name, property_file=report, json_path=GATE_SUMMARY_PATH)
    evaluation_uri = evaluate.properties.ProcessingOutputConfig.Outputs[EVALUATION_OUTPUT].S3Output.S3Uri
    # One Fail step for a failed and an inconclusive gate: the message starts with the status and the summary
    # says which figures were missing or short (evaluation.evaluate.decide_gate).
    quality_failed = FailStep(
        name=FAIL_QUALITY, display_name="Quality gate not passed",
        description="The quality gate failed (a figure is short of its threshold) or is inconclusive (a figure "
                    "could not be measured); the message gives the figures, the thresholds and why.",
        error_message=Join(on="", values=[
            "Model not registered (quality gate: ", status, "). ", summary,
            " Thresholds: MinCharacterSimilarity ", p[P.MIN_SIMILARITY], ", MinImprovementOverBase ",
            p[P.MIN_IMPROVEMENT], ", MaxNearCopyRate ", p[P.MAX_NEAR_COPY_RATE], ". Report: ", evaluation_uri]),
    )
    check_quality = ConditionStep(
        name=CHECK_QUALITY, display_name="Check quality",
        description="Register only if the Evaluate step's gate passed: every criterion measured and met (character "
                    "similarity >= MinCharacterSimilarity, improvement over the base model >= "
                    "MinImprovementOverBase, near-copy rate <= MaxNearCopyRate).",
        conditions=[ConditionEquals(left=status, right=GATE_PASSED)],
        if_steps=[register], else_steps=[quality_failed],
    )
    if _lora(ctx):  # a TrainingStep that succeeded trained a model: nothing to turn away
        return check_quality
    not_trained = FailStep(
        name=FAIL_NOT_TRAINED, display_name="No model trained (dry run)",
        description="FineTune ran as a dry run: the request was validated and written, no model was trained, "
                    "so there is nothing to register.",
        error_message=Join(on="", values=[
            "Model not registered: FineTune ran as a dry run (DryRun=", finetune.properties.Outputs["DryRun"],
            "), so no Bedrock customization job ran and no model was trained. The validated request is "
            "beside the job outputs; the evaluation report is at ", evaluation_uri]),
    )
    return ConditionStep(
        name=CHECK_TRAINED, display_name="Check a model was trained",
        description="A dry-run fine-tune trains nothing: stop before the quality gate so that no figure of a "
                    "dry run can lead to a registered model.",
        conditions=[ConditionEquals(left=finetune.properties.Outputs["DryRun"], right="false")],
        if_steps=[check_quality], else_steps=[not_trained],
    )
