"""The Bedrock backend's evaluation throughput steps (``finetune.backend: bedrock`` only), assembled here so that
:mod:`pipeline.definition` stays an assembly of one builder per step.

``ProvisionEvaluationModel`` and ``ReleaseEvaluationModel`` are CallbackSteps on the FineTune queue; the consumer
(:mod:`containers.lambda_handlers.evaluation_throughput`) creates the no-commitment Provisioned Throughput named
after the execution for this run's ``CustomModelArn``, answers once it is InService, and deletes it after
Evaluate. Clean-up on failure is the execution-status EventBridge rule's Lambda (why not a step: see that module).
"""

from __future__ import annotations

from typing import Any

from pipeline.step_names import PROVISION_EVAL, RELEASE_EVAL  # the Task names the consumer dispatches on

PROVISION_OUTPUTS = ("ProvisionedModelArn", "ProvisionedModelName")
RELEASE_OUTPUTS = ("Released",)


def provision_step(queue_url: str, finetune: Any, evaluation_images: Any) -> Any:
    """``ProvisionEvaluationModel``: a Provisioned Throughput for this run's custom model, before Evaluate.

    Args:
        queue_url: the FineTune callback queue.
        finetune: the FineTune CallbackStep (its ``CustomModelArn`` and ``DryRun`` outputs).
        evaluation_images: the ``EvaluationImagesUri`` parameter (given: nothing is provisioned).
    """
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.mlops.workflow.callback_step import CallbackOutput, CallbackStep

    return CallbackStep(
        name=PROVISION_EVAL, sqs_queue_url=queue_url,
        inputs={"Task": PROVISION_EVAL, "CustomModelArn": finetune.properties.Outputs["CustomModelArn"],
                "DryRun": finetune.properties.Outputs["DryRun"], "EvaluationImagesUri": evaluation_images,
                "PipelineExecutionArn": ExecutionVariables.PIPELINE_EXECUTION_ARN},
        outputs=[CallbackOutput(output_name=name) for name in PROVISION_OUTPUTS],
        display_name="Provision the model for evaluation",
        description="Create a no-commitment Provisioned Throughput (1 model unit) named after this execution for "
                    "this run's custom model, check it serves that model, and complete once it is InService (20 to "
                    "30 minutes). Nothing is created for a dry run or when EvaluationImagesUri is given.",
    )


def release_step(queue_url: str, provision: Any, evaluate: Any) -> Any:
    """``ReleaseEvaluationModel``: delete the evaluation throughput once Evaluate is done.

    Args:
        queue_url: the FineTune callback queue.
        provision: the :func:`provision_step` step.
        evaluate: the Evaluate step (this step depends on it).
    """
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.mlops.workflow.callback_step import CallbackOutput, CallbackStep

    return CallbackStep(
        name=RELEASE_EVAL, sqs_queue_url=queue_url,
        inputs={"Task": RELEASE_EVAL, "ProvisionedModelArn": provision.properties.Outputs["ProvisionedModelArn"],
                "PipelineExecutionArn": ExecutionVariables.PIPELINE_EXECUTION_ARN},
        outputs=[CallbackOutput(output_name=name) for name in RELEASE_OUTPUTS],
        depends_on=[evaluate],
        display_name="Release the evaluation model",
        description="Delete this execution's evaluation Provisioned Throughput (billed hourly) after Evaluate. If "
                    "the execution fails or is stopped, the execution-status rule deletes it instead.",
    )
