"""The RegisterModel LambdaStep: create the model package once per pipeline execution.

Event (flat strings from the pipeline): ``ModelPackageGroupName``, ``ModelApprovalStatus``,
``EvaluationReportUri`` (or ``EvaluationUri``), ``ReviewedManifestUri``, ``PipelineExecutionArn``,
``ClientToken``, ``DryRun``, ``FineTuneBackend``, metric values (``CharacterSimilarity``,
``ImprovementOverBase``, ...), and by backend:

- ``sagemaker`` (LoRA): ``ModelDataUrl`` (the training job's ``model.tar.gz``), ``TrainingJobName``,
  ``BaseModelS3Uri``, ``InferenceImageUri``, ``InferenceInstanceTypes`` (comma-separated), optionally
  ``BaseModelId`` and ``ExecutionRoleArn``; the package is deployable (``InferenceSpecification``).
- ``bedrock`` (the default when ``FineTuneBackend`` is absent): ``CustomModelArn``, ``JobArn``, ``BaseModelId``.

Returns ``{ModelPackageArn, Registered, Reason}``, the step's outputs. A dry run, or no model
(``ModelDataUrl`` / ``CustomModelArn`` empty), registers nothing and says why.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from containers.lambda_handlers.runtime import Runtime, default_runtime
from core.mlops_config import model_package_group_name
from steps.registry import RegistrationRequest, SageMakerModelRegistry, register_model

log = logging.getLogger(__name__)

FUNCTION_NAME = "storyboard-register-model"


def handle(event: Mapping[str, Any], runtime: Runtime) -> dict[str, str]:
    """Register against the SageMaker Model Registry (see the module docstring).

    Raises:
        InputError: a malformed event or a request over the Model Registry's limits (nothing is created).
    """
    config = runtime.config
    request = RegistrationRequest.from_event(event, model_package_group_name(config.registry, config.project))
    result = register_model(request, SageMakerModelRegistry(runtime.client("sagemaker")),
                            config.registry.approval_status)
    log.info("RegisterModel (%s): %s", request.backend, result.reason)
    return result.outputs()


def handler(event: Mapping[str, Any], context: Any = None) -> dict[str, str]:
    """Lambda entry point (LambdaStep)."""
    return handle(event, default_runtime())
