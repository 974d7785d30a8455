"""The FineTune step of ``finetune.backend: sagemaker``: a native TrainingStep that trains a LoRA on the base model.

The training image runs ``python3 -m containers.training.train_lora`` (named in ``ContainerEntrypoint``, so the
definition says what runs); channels ``train``, ``review`` and ``base_model``; hyperparameters from pipeline
parameters; the loss as the ``train:loss`` metric; checkpoints under the execution's prefix, so a retried or
spot-interrupted job resumes.
"""

from __future__ import annotations

from typing import Any

from pipeline import parameters as P
from pipeline.step_context import _Context, _dataset_uri, _output_uri, _tags
from pipeline.step_names import CHECKPOINT_LOCAL_PATH, FINETUNE, LOSS_METRIC, TRAINING_ENTRYPOINT


def _finetune_training_step(ctx: _Context, caption: Any, review: Any) -> Any:
    from sagemaker.core.shapes import MetricDefinition, Tag
    from sagemaker.core.training.configs import (
        CheckpointConfig,
        Compute,
        InputData,
        OutputDataConfig,
        StoppingCondition,
    )
    from sagemaker.mlops.workflow.retry import SageMakerJobExceptionTypeEnum, SageMakerJobStepRetryPolicy
    from sagemaker.mlops.workflow.steps import TrainingStep
    from sagemaker.train.model_trainer import ModelTrainer

    class _Trainer(ModelTrainer):
        """ModelTrainer whose request names the image's own entry point (``ContainerEntrypoint``): no code
        is uploaded, and the local runner runs exactly what the definition says."""

        def _create_training_job_args(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            request = super()._create_training_job_args(*args, **kwargs)
            request["AlgorithmSpecification"]["ContainerEntrypoint"] = list(TRAINING_ENTRYPOINT)
            return request

    p, sm, lora = ctx.params, ctx.config.sagemaker, ctx.config.finetune.lora
    hyperparameters: dict[str, Any] = {
        "max_train_steps": p[P.LORA_STEPS].to_string(),
        "learning_rate": p[P.LORA_LEARNING_RATE].to_string(),
        "lora_rank": p[P.LORA_RANK].to_string(),
        "resolution": p[P.LORA_RESOLUTION].to_string(),
        "train_batch_size": p[P.LORA_BATCH_SIZE].to_string(),
        "seed": p[P.TRAINING_SEED].to_string(),
        "mixed_precision": p[P.MIXED_PRECISION],
        **lora.hyperparameters(),
    }
    stopping = StoppingCondition(max_runtime_in_seconds=sm.training_max_runtime_s,
                                 max_wait_time_in_seconds=sm.training_max_wait_s if sm.training_use_spot else None)
    trainer = _Trainer(
        training_image=ctx.settings.training_image_uri,
        role=ctx.settings.role_arn,
        compute=Compute(instance_type=p[P.TRAINING_INSTANCE_TYPE], instance_count=1,
                        volume_size_in_gb=sm.training_volume_size_gb,
                        enable_managed_spot_training=sm.training_use_spot),
        stopping_condition=stopping,
        output_data_config=OutputDataConfig(s3_output_path=_output_uri(ctx, FINETUNE, "model")),
        checkpoint_config=CheckpointConfig(s3_uri=_output_uri(ctx, FINETUNE, "checkpoints"),
                                           local_path=CHECKPOINT_LOCAL_PATH),
        hyperparameters=hyperparameters,
        environment={"AWS_DEFAULT_REGION": ctx.settings.region, "PYTHONUNBUFFERED": "1", "STORYBOARD_STEP": FINETUNE},
        base_job_name=f"{ctx.config.project}-lora",
        sagemaker_session=ctx.session,
        tags=[Tag(key=t["Key"], value=t["Value"]) for t in _tags(ctx.config)],
    ).with_metric_definitions([MetricDefinition(name=LOSS_METRIC["Name"], regex=LOSS_METRIC["Regex"])])
    args = trainer.train(input_data_config=[
        InputData(channel_name="train", data_source=_dataset_uri(caption)),
        InputData(channel_name="review", data_source=review.properties.Outputs["ReviewedManifestUri"]),
        InputData(channel_name="base_model", data_source=p[P.BASE_MODEL_URI]),
    ])
    retry = ctx.config.sagemaker.retry
    return TrainingStep(
        name=FINETUNE, step_args=args, display_name="Fine-tune (LoRA)",
        description="Train a LoRA on the base model (BaseModelS3Uri, Stable Diffusion XL base 1.0 by default) "
                    "with the reviewed images and captions; the loss is the train:loss metric; checkpoints "
                    "let a retried or spot-interrupted job resume. Output: model.tar.gz with the LoRA weights "
                    "(safetensors), the training configuration and a model card.",
        retry_policies=[SageMakerJobStepRetryPolicy(
            exception_types=[SageMakerJobExceptionTypeEnum.CAPACITY_ERROR,
                             SageMakerJobExceptionTypeEnum.INTERNAL_ERROR],
            max_attempts=retry.max_attempts, interval_seconds=retry.interval_s, backoff_rate=retry.backoff_rate)],
    )
