"""What every step builder of :mod:`pipeline.definition` shares: the build context (configuration, resolved
settings, session, pipeline parameters), the S3 location of a step's outputs, the tags and the fine-tune backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.sagemaker_config import SageMakerSettings
from pipeline.step_names import DATASET_OUTPUT

if TYPE_CHECKING:
    from core.config import StoryboardConfig


@dataclass(frozen=True)
class _Context:
    config: StoryboardConfig
    settings: SageMakerSettings
    session: Any
    params: dict[str, Any]


def _output_uri(ctx: _Context, step: str, output: str, *suffix: str) -> Any:
    """``s3://<bucket>/<prefix>/<pipeline>/<execution-id>/<step>/<output>[/suffix...]`` as a Join."""
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join

    s = ctx.settings
    return Join(on="/", values=["s3:/", s.bucket, *s.prefix.split("/"), s.pipeline_name,
                                ExecutionVariables.PIPELINE_EXECUTION_ID, step, output, *suffix])


def _tags(config: StoryboardConfig) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(config.sagemaker.tags.items())]


def _dataset_uri(caption: Any) -> Any:
    return caption.properties.ProcessingOutputConfig.Outputs[DATASET_OUTPUT].S3Output.S3Uri


def _lora(ctx: _Context) -> bool:
    return ctx.config.finetune.backend == "sagemaker"
