"""From the configuration to the stack's parameters, and from the stack's outputs back to the configuration.

- :func:`stack_parameters`: what ``storyboard deploy`` passes unless ``--parameter`` says otherwise
  (``ProjectName`` and ``S3Prefix`` from ``pipeline.yaml``, so names agree on both sides; the model IDs the
  roles may call; the reviewers' work team).
- :func:`lambda_image_uri`: the pushed Lambda image by digest (``<repository URI>@sha256:...``), or ``""``
  when the repository or the tag does not exist yet (the template then creates no function).
- :func:`apply_stack_outputs`: a copy of the configuration with every name the pipeline needs taken from
  the stack (role, bucket, prefix, images, queue, RegisterModel function, A2I and Bedrock roles, work team,
  model package group), so ``upsert`` compiles a definition without placeholder.
- :func:`lambda_config_yaml`: the configuration the functions read (``STORYBOARD_CONFIG``, the
  ``LambdaConfigUri`` output), written by ``upsert``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import yaml

from core.errors import InputError

if TYPE_CHECKING:
    from core.config import StoryboardConfig

# Output key -> what it configures; the outputs `upsert` cannot do without.
REQUIRED_OUTPUTS = {
    "PipelineRoleArn": "sagemaker.role_arn",
    "BucketName": "sagemaker.bucket",
    "S3Prefix": "sagemaker.prefix",
    "CallbackQueueUrl": "sagemaker.review_queue_url and finetune_queue_url",
    "ProcessingImageUri": "sagemaker.processing_image_uri",
    "TrainingImageUri": "sagemaker.training_image_uri",
    "InferenceImageUri": "sagemaker.inference_image_uri",
    "RegisterModelFunctionArn": "sagemaker.register_function_arn",
    "A2IRoleArn": "review.role_arn",
    "BedrockCustomizationRoleArn": "finetune.role_arn",
    "ModelPackageGroupName": "registry.model_package_group_name",
    "LambdaConfigUri": "the functions' STORYBOARD_CONFIG",
}
# Inference-profile prefixes of cross-Region model IDs (Bedrock user guide, "Supported inference profiles").
_PROFILE_PREFIX = re.compile(r"^(us|eu|apac|jp|au|ca|us-gov|global)\.")


def foundation_model_id(model_id: str) -> str:
    """The foundation model behind an inference profile ID (``us.amazon.nova-2-lite-v1:0`` ->
    ``amazon.nova-2-lite-v1:0``); a model ID is returned unchanged."""
    return _PROFILE_PREFIX.sub("", model_id, count=1)


def stack_parameters(config: StoryboardConfig) -> dict[str, str]:
    """Template parameters derived from ``config`` (``--parameter`` values take precedence over these)."""
    params = {
        "ProjectName": config.project,
        "S3Prefix": config.sagemaker.prefix.strip("/"),
        "CaptionModelId": config.captions.model_id,
        "CaptionFoundationModelId": foundation_model_id(config.captions.model_id),
        "BedrockBaseModelId": config.finetune.base_model_id,
    }
    if config.review.workteam_arn:
        params["WorkteamArn"] = config.review.workteam_arn
    return params


def lambda_image_uri(ecr: Any, repository_name: str, tag: str) -> str:
    """``<repository URI>@<digest>`` of ``repository_name:tag``, or ``""`` if either does not exist yet.

    Pinning the functions to a digest makes a re-push of the same tag reach them at the next deploy (Lambda
    resolves a tag only when the function is created or updated).
    """
    from botocore.exceptions import ClientError

    try:
        repository = ecr.describe_repositories(repositoryNames=[repository_name])["repositories"][0]
        images = ecr.describe_images(repositoryName=repository_name, imageIds=[{"imageTag": tag}])["imageDetails"]
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("RepositoryNotFoundException", "ImageNotFoundException"):
            return ""
        raise
    if not images:
        return ""
    return f"{repository['repositoryUri']}@{images[0]['imageDigest']}"


def missing_outputs(outputs: Mapping[str, str], required: Mapping[str, str] = REQUIRED_OUTPUTS) -> list[str]:
    """The required output keys that ``outputs`` lacks (or holds empty)."""
    return [key for key in required if not outputs.get(key)]


def apply_stack_outputs(config: StoryboardConfig, outputs: Mapping[str, str], stack_name: str) -> StoryboardConfig:
    """A copy of ``config`` whose AWS names come from the stack's ``outputs``.

    Raises:
        InputError: an output :data:`REQUIRED_OUTPUTS` names is missing; the message names it and what it
            configures (``RegisterModelFunctionArn`` is missing until the Lambda image is pushed and the stack
            deployed again).
    """
    missing = missing_outputs(outputs)
    if missing:
        hint = (" (the functions exist once the Lambda image is pushed: `storyboard images push`, then "
                "`storyboard deploy` again)" if any(k.endswith("FunctionArn") for k in missing) else "")
        details = ", ".join(f"{key} ({REQUIRED_OUTPUTS[key]})" for key in missing)
        raise InputError(f"stack {stack_name} has no output {details}{hint}")
    bucket, prefix = outputs["BucketName"], outputs["S3Prefix"].strip("/")
    sm = config.sagemaker.model_copy(update={
        "role_arn": outputs["PipelineRoleArn"], "bucket": bucket, "prefix": prefix,
        "processing_image_uri": outputs["ProcessingImageUri"], "training_image_uri": outputs["TrainingImageUri"],
        "inference_image_uri": outputs["InferenceImageUri"], "review_queue_url": outputs["CallbackQueueUrl"],
        "finetune_queue_url": outputs["CallbackQueueUrl"], "register_function_arn": outputs["RegisterModelFunctionArn"],
    })
    review_update: dict[str, Any] = {"role_arn": outputs["A2IRoleArn"], "output_s3_uri": f"s3://{bucket}/{prefix}"}
    if outputs.get("WorkteamArn"):
        review_update["workteam_arn"] = outputs["WorkteamArn"]
    if outputs.get("FlowDefinitionArn"):
        review_update["flow_definition_arn"] = outputs["FlowDefinitionArn"]
    finetune = config.finetune.model_copy(update={
        "role_arn": outputs["BedrockCustomizationRoleArn"],
        "output_s3_uri": config.finetune.output_s3_uri or f"s3://{bucket}/{prefix}/bedrock/FineTune/customization"})
    registry = config.registry.model_copy(update={"model_package_group_name": outputs["ModelPackageGroupName"]})
    return config.model_copy(update={"sagemaker": sm, "review": config.review.model_copy(update=review_update),
                                     "finetune": finetune, "registry": registry})


def lambda_config_yaml(config: StoryboardConfig) -> str:
    """``config`` as the YAML the functions load (machine-specific paths and the profile dropped).

    Raises:
        InputError: the dump does not load back as a valid configuration (a bug, caught before upload).
    """
    from core.config import parse_config
    from pipeline.container_config import container_config

    data = container_config(config)
    data["sagemaker"] = config.sagemaker.model_dump(mode="json")
    text = yaml.safe_dump(data, sort_keys=True)
    try:
        parse_config(yaml.safe_load(text), source="lambda configuration")
    except Exception as err:  # noqa: BLE001 - any validation error means the dump is unusable
        raise InputError(f"the functions' configuration does not validate: {err}") from None
    return text
