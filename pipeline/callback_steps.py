"""The CallbackSteps the SQS consumer completes: HumanReview (A2I human loops or the automatic policy) and, for
``finetune.backend: bedrock``, FineTune (a Bedrock model customization job). Callback steps have side effects,
so they are never cached and take no retry policy (DESIGN §5).
"""

from __future__ import annotations

from typing import Any

from pipeline import parameters as P
from pipeline.step_context import _Context, _dataset_uri, _output_uri
from pipeline.step_names import FINETUNE, FINETUNE_OUTPUTS, REVIEW, REVIEW_OUTPUTS


def _review_step(ctx: _Context, caption: Any) -> Any:
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join
    from sagemaker.mlops.workflow.callback_step import CallbackOutput, CallbackStep

    dataset = _dataset_uri(caption)
    return CallbackStep(
        name=REVIEW, sqs_queue_url=ctx.settings.review_queue_url,
        inputs={
            "Task": REVIEW,
            "ReviewMode": ctx.params[P.REVIEW_MODE],
            "DatasetUri": dataset,
            "ManifestUri": Join(on="/", values=[dataset, "manifest.jsonl"]),
            "TrainingManifestUri": Join(on="/", values=[dataset, "train.jsonl"]),
            "OutputUri": _output_uri(ctx, REVIEW, "reviewed"),
            "PipelineExecutionArn": ExecutionVariables.PIPELINE_EXECUTION_ARN,
        },
        outputs=[CallbackOutput(output_name=name) for name in REVIEW_OUTPUTS],
        display_name="Human review",
        description="Reviewers approve, edit or reject every image and caption (Amazon A2I human loops), or "
                    "the automatic policy does (ReviewMode=auto). Completes when every human loop is done; "
                    "outputs the reviewed manifest and the approved, edited and rejected counts.",
    )


def _finetune_step(ctx: _Context, review: Any) -> Any:
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join
    from sagemaker.mlops.workflow.callback_step import CallbackOutput, CallbackStep

    p = ctx.params
    return CallbackStep(
        name=FINETUNE, sqs_queue_url=ctx.settings.finetune_queue_url,
        inputs={
            "Task": FINETUNE,
            "ReviewedManifestUri": review.properties.Outputs["ReviewedManifestUri"],
            "BaseModelId": p[P.BASE_MODEL],
            "stepCount": p[P.STEP_COUNT],
            "batchSize": p[P.BATCH_SIZE],
            "learningRate": p[P.LEARNING_RATE],
            "DryRun": p[P.DRY_RUN],
            "JobName": Join(on="-", values=[ctx.config.project, "canvas", ExecutionVariables.PIPELINE_EXECUTION_ID]),
            "OutputUri": _output_uri(ctx, FINETUNE, "customization"),
            "PipelineExecutionArn": ExecutionVariables.PIPELINE_EXECUTION_ARN,
        },
        outputs=[CallbackOutput(output_name=name) for name in FINETUNE_OUTPUTS],
        display_name="Fine-tune (Bedrock)",
        description="Start a Bedrock model customization job on the reviewed training manifest; the job-state "
                    "event (and a reconciler) completes the step with the job ARN and the custom model ARN. "
                    "DryRun=true means the request was validated and written but no job ran.",
    )
