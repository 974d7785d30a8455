"""The processing steps ExtractFrames, CaptionImages and Evaluate: their processors, inputs, outputs, arguments,
retry policies and caching.

Processing steps run the processing image's own modules (``python3 -m containers.processing.<step>``; Evaluate
of the ``sagemaker`` backend runs on the training image): no code is uploaded, so compiling is offline and
deterministic. They retry throttling, service faults, capacity, resource-limit and internal errors
(``sagemaker.retry``) and are cached when ``sagemaker.cache_processing`` is on.
"""

from __future__ import annotations

from typing import Any

from pipeline import parameters as P
from pipeline.step_context import _Context, _dataset_uri, _lora, _output_uri, _tags
from pipeline.step_names import (
    CAPTION,
    DATASET_OUTPUT,
    ENTRYPOINT_MODULES,
    EVALUATE,
    EVALUATION_FILE,
    EVALUATION_OUTPUT,
    EVALUATION_PROPERTY_FILE,
    EXTRACT,
    EXTRACT_OUTPUT,
    PROCESSING_ROOT,
)


def _input(name: str, source: Any, distribution: str = "FullyReplicated") -> Any:
    from sagemaker.core.shapes import ProcessingInput, ProcessingS3Input

    return ProcessingInput(
        input_name=name,
        s3_input=ProcessingS3Input(
            s3_uri=source, local_path=f"{PROCESSING_ROOT}/input/{name}", s3_data_type="S3Prefix",
            s3_input_mode="File", s3_data_distribution_type=distribution),
    )


def _output(ctx: _Context, step: str, name: str) -> Any:
    from sagemaker.core.shapes import ProcessingOutput, ProcessingS3Output

    return ProcessingOutput(
        output_name=name,
        s3_output=ProcessingS3Output(s3_uri=_output_uri(ctx, step, name),
                                     local_path=f"{PROCESSING_ROOT}/output/{name}", s3_upload_mode="EndOfJob"),
    )


def _processor(ctx: _Context, step: str, instance_count: Any, instance_type: Any = None,
               image_uri: str | None = None) -> Any:
    from sagemaker.core.processing import Processor

    sm = ctx.config.sagemaker
    return Processor(
        role=ctx.settings.role_arn,
        image_uri=image_uri or ctx.settings.processing_image_uri,
        instance_count=instance_count,
        instance_type=instance_type if instance_type is not None else ctx.params[P.INSTANCE_TYPE],
        entrypoint=["python3", "-m", ENTRYPOINT_MODULES[step]],
        volume_size_in_gb=sm.processing_volume_size_gb,
        max_runtime_in_seconds=sm.processing_max_runtime_s,
        base_job_name=f"{ctx.config.project}-{step.lower()}",
        sagemaker_session=ctx.session,
        env={"AWS_DEFAULT_REGION": ctx.settings.region, "PYTHONUNBUFFERED": "1", "STORYBOARD_STEP": step},
        tags=_tags(ctx.config),
    )


def _processing_extras(ctx: _Context) -> dict[str, Any]:
    from sagemaker.mlops.workflow.retry import (
        SageMakerJobExceptionTypeEnum,
        SageMakerJobStepRetryPolicy,
        StepExceptionTypeEnum,
        StepRetryPolicy,
    )
    from sagemaker.mlops.workflow.steps import CacheConfig

    retry = ctx.config.sagemaker.retry
    common = dict(max_attempts=retry.max_attempts, interval_seconds=retry.interval_s,
                  backoff_rate=retry.backoff_rate)
    extras: dict[str, Any] = {
        "retry_policies": [
            StepRetryPolicy(exception_types=[StepExceptionTypeEnum.THROTTLING,
                                             StepExceptionTypeEnum.SERVICE_FAULT], **common),
            SageMakerJobStepRetryPolicy(exception_types=[SageMakerJobExceptionTypeEnum.CAPACITY_ERROR,
                                                         SageMakerJobExceptionTypeEnum.RESOURCE_LIMIT,
                                                         SageMakerJobExceptionTypeEnum.INTERNAL_ERROR], **common),
        ],
    }
    if ctx.config.sagemaker.cache_processing:
        extras["cache_config"] = CacheConfig(enable_caching=True, expire_after=ctx.config.sagemaker.cache_expire_after)
    return extras


def _extract_step(ctx: _Context) -> Any:
    from sagemaker.mlops.workflow.steps import ProcessingStep

    p = ctx.params
    args = _processor(ctx, EXTRACT, p[P.INSTANCE_COUNT]).run(
        inputs=[
            _input("config", p[P.CONFIG_URI]),
            _input("videos", p[P.INPUT_VIDEOS], distribution="ShardedByS3Key"),
            _input("references", p[P.REFERENCES]),
        ],
        outputs=[_output(ctx, EXTRACT, EXTRACT_OUTPUT)],
        arguments=["--sampling-mode", p[P.SAMPLING_MODE], "--sampling-interval", p[P.SAMPLING_INTERVAL].to_string(),
                   "--dedup-threshold", p[P.DEDUP_THRESHOLD].to_string(),
                   "--embedding-model-id", p[P.EMBEDDING_MODEL]],
    )
    return ProcessingStep(
        name=EXTRACT, step_args=args, display_name="Extract character frames",
        description="Sample frames from every video, detect each character (defined by its reference images), "
                    "crop it with padding and drop near-duplicates. Videos are sharded across "
                    "ProcessingInstanceCount instances by S3 key; each instance writes its own shard folder.",
        **_processing_extras(ctx))


def _caption_step(ctx: _Context, extract: Any) -> Any:
    from sagemaker.mlops.workflow.steps import ProcessingStep

    p = ctx.params
    args = _processor(ctx, CAPTION, 1).run(
        inputs=[
            _input("config", p[P.CONFIG_URI]),
            _input("extract", extract.properties.ProcessingOutputConfig.Outputs[EXTRACT_OUTPUT].S3Output.S3Uri),
        ],
        outputs=[_output(ctx, CAPTION, DATASET_OUTPUT)],
        arguments=["--caption-model-id", p[P.CAPTION_MODEL], "--dedup-threshold", p[P.DEDUP_THRESHOLD].to_string(),
                   "--embedding-model-id", p[P.EMBEDDING_MODEL],
                   "--image-uri-prefix", _output_uri(ctx, CAPTION, DATASET_OUTPUT, "crops/")],
    )
    return ProcessingStep(
        name=CAPTION, step_args=args, display_name="Caption images",
        description="Merge the ExtractFrames shards, de-duplicate across them, caption every crop, and write "
                    "the labelling manifest (manifest.jsonl), the Bedrock training manifest (train.jsonl) and "
                    "an HTML report, validated against the Nova Canvas dataset limits.",
        **_processing_extras(ctx))


def _evaluate_step(ctx: _Context, caption: Any, review: Any, finetune: Any,
                   provision: Any = None) -> tuple[Any, Any]:
    from sagemaker.core.workflow.functions import Join
    from sagemaker.core.workflow.properties import PropertyFile
    from sagemaker.mlops.workflow.steps import ProcessingStep

    p = ctx.params
    report = PropertyFile(name=EVALUATION_PROPERTY_FILE, output_name=EVALUATION_OUTPUT, path=EVALUATION_FILE)
    inputs = [
        _input("config", p[P.CONFIG_URI]),
        _input("references", p[P.REFERENCES]),
        _input("dataset", _dataset_uri(caption)),
    ]
    common = ["--embedding-model-id", p[P.EMBEDDING_MODEL],
              "--reviewed-manifest-uri", review.properties.Outputs["ReviewedManifestUri"],
              # never an empty argument: the option and its (possibly empty) value in one string
              Join(on="", values=["--evaluation-images=", p[P.EVALUATION_IMAGES]]),
              # the gate's thresholds: the Evaluate step decides the gate and writes gate.status
              Join(on="", values=["--min-character-similarity=", p[P.MIN_SIMILARITY]]),
              Join(on="", values=["--min-improvement=", p[P.MIN_IMPROVEMENT]]),
              Join(on="", values=["--max-near-copy-rate=", p[P.MAX_NEAR_COPY_RATE]])]
    if _lora(ctx):
        inputs += [_input("model", finetune.properties.ModelArtifacts.S3ModelArtifacts),
                   _input("base_model", p[P.BASE_MODEL_URI])]
        arguments = ["--finetune-backend", "sagemaker",
                     "--model-data-url", finetune.properties.ModelArtifacts.S3ModelArtifacts, *common]
        # the training image: PyTorch with CUDA, diffusers and the project (the processing image has no GPU stack)
        processor = _processor(ctx, EVALUATE, 1, instance_type=p[P.EVALUATION_INSTANCE_TYPE],
                               image_uri=ctx.settings.training_image_uri)
        description = ("Generate storyboard images from the fixed prompt set with the base model and base + "
                       "this run's LoRA (same prompts and seeds, on EvaluationInstanceType), embed them, score "
                       "similarity to the reference characters and write evaluation.json, the loss curve and an "
                       "HTML report.")
    else:
        arguments = ["--finetune-backend", "bedrock",
                     "--custom-model-arn", finetune.properties.Outputs["CustomModelArn"],
                     "--dry-run", finetune.properties.Outputs["DryRun"],
                     "--base-model-id", p[P.BASE_MODEL], *common]
        if provision is not None:
            arguments.append(Join(on="", values=["--provisioned-model-arn=",
                                                 provision.properties.Outputs["ProvisionedModelArn"]]))
        processor = _processor(ctx, EVALUATE, 1)
        description = ("Generate storyboard images from the fixed prompt set with the base and the fine-tuned "
                       "model (or read them from EvaluationImagesUri), embed them, score similarity to the "
                       "reference characters and write evaluation.json and an HTML report.")
    args = processor.run(inputs=inputs, outputs=[_output(ctx, EVALUATE, EVALUATION_OUTPUT)], arguments=arguments)
    step = ProcessingStep(
        name=EVALUATE, step_args=args, display_name="Evaluate character consistency", description=description,
        property_files=[report], **_processing_extras(ctx))
    return step, report
