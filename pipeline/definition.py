"""The SageMaker Pipeline (SDK v3): seven steps assembled from configuration, no business logic.

``finetune.backend: sagemaker`` (the default)::

    ExtractFrames -> CaptionImages -> HumanReview -> FineTune -> Evaluate -> CheckQuality
      Processing      Processing       Callback      Training    Processing   yes: RegisterModel (Lambda)
      N instances,    1 instance,                    LoRA on     base and      no:  QualityGateFailed (Fail)
      ShardedByS3Key  global dedup                   SDXL        base+LoRA

``finetune.backend: bedrock``::

    ExtractFrames -> CaptionImages -> HumanReview -> FineTune -> ProvisionEvaluationModel -> Evaluate
      Processing      Processing       Callback      Callback    Callback: no-commitment     Processing
      N instances,    1 instance,                                Provisioned Throughput      evaluation.json
      ShardedByS3Key  global dedup                               for this run's model
    Evaluate -> ReleaseEvaluationModel (Callback: delete the throughput)
    Evaluate -> CheckModelTrained: DryRun == "false"?
                  yes: CheckQuality  yes: RegisterModel (Lambda)
                                     no:  QualityGateFailed (Fail)
                  no:  ModelNotTrained (Fail)

  The throughput is named after the execution, checked to serve this run's CustomModelArn, deleted by
  ReleaseEvaluationModel after Evaluate and, when the execution fails or is stopped, by the Lambda of the
  execution-status EventBridge rule (``containers.lambda_handlers.evaluation_throughput``; why not a step on a
  failure branch is said there). Both callbacks use the FineTune queue and its consumer.

Decisions (also in the README):

- The LoRA fine-tune is a native TrainingStep: the training image runs ``python3 -m
  containers.training.train_lora`` (named in ``ContainerEntrypoint``, so the definition says what runs);
  channels ``train`` (the CaptionImages dataset), ``review`` (the reviewed manifest) and ``base_model``
  (``BaseModelS3Uri``); hyperparameters from pipeline parameters; the loss as the ``train:loss`` metric
  (Studio charts it); checkpoints under the execution's prefix, so a retried or spot-interrupted job
  resumes. Evaluate and RegisterModel read ``ModelArtifacts.S3ModelArtifacts``.

- A dry-run fine-tune trains nothing, so ``CheckModelTrained`` sends it to the ``ModelNotTrained``
  Fail step before any quality figure is compared: the pipeline can never register a model that was
  not trained, and the figures of a dry run (which may be missing or come from a folder of images)
  are never mistaken for a trained model's. A separate Condition step is used because SageMaker
  evaluates every condition of a list, so a JsonGet on a missing figure would fail the step with an
  unhelpful message instead of taking the else branch.
- Processing steps run the processing image's own modules (``python3 -m
  containers.processing.<step>``): no code is uploaded, so compiling is offline and deterministic.
- Every S3 location a step writes is ``s3://<bucket>/<prefix>/<pipeline>/<execution-id>/<step>/<output>``;
  the configuration travels as the ``PipelineConfigS3Uri`` input that ``storyboard upsert`` uploads.
- Caching is on for the processing steps only (``sagemaker.cache_processing``); Callback and
  Lambda steps have side effects (human loops, Bedrock jobs, model packages) and are never cached.
- Processing steps retry throttling, service faults, capacity, resource-limit and internal errors
  (``sagemaker.retry``); Callback steps take no retry policy (DESIGN §5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.sagemaker_config import SageMakerSettings, resolve_settings
from pipeline import parameters as P
from pipeline.evaluation_throughput_steps import (  # noqa: F401  (step names re-exported beside the others)
    PROVISION_EVAL,
    RELEASE_EVAL,
    provision_step,
    release_step,
)

if TYPE_CHECKING:
    from core.config import StoryboardConfig

# Step names (the Studio graph shows the display names).
EXTRACT = "ExtractFrames"
CAPTION = "CaptionImages"
REVIEW = "HumanReview"
FINETUNE = "FineTune"
EVALUATE = "Evaluate"
CHECK_TRAINED = "CheckModelTrained"
CHECK_QUALITY = "CheckQuality"
REGISTER = "RegisterModel"
FAIL_NOT_TRAINED = "ModelNotTrained"
FAIL_QUALITY = "QualityGateFailed"

# Processing channels (ProcessingInput / ProcessingOutput names) and container paths.
PROCESSING_ROOT = "/opt/ml/processing"
EXTRACT_OUTPUT = "extract"
DATASET_OUTPUT = "dataset"
EVALUATION_OUTPUT = "evaluation"
EVALUATION_PROPERTY_FILE = "EvaluationReport"
EVALUATION_FILE = "evaluation.json"

# JSON paths in evaluation.json (the evaluation step writes them; tests check both). CheckQuality reads only the
# gate's status and QualityGateFailed only its summary sentence: both are always strings, whereas a figure may be
# null (no base images, no training crops) and a JsonGet of null fails the step instead of taking the else branch.
GATE_STATUS_PATH = "gate.status"
GATE_SUMMARY_PATH = "gate.summary"
GATE_PASSED = "passed"
# Read by RegisterModel, which runs only when the gate passed, that is when every figure was measured.
SIMILARITY_PATH = "metrics.character_similarity.finetuned.mean"
IMPROVEMENT_PATH = "metrics.character_similarity.improvement"

# Callback tasks and output parameters (the SQS consumer and the local handlers dispatch on "Task").
REVIEW_OUTPUTS = ("ReviewedManifestUri", "ApprovedCount", "EditedCount", "RejectedCount")
FINETUNE_OUTPUTS = ("JobArn", "CustomModelArn", "DryRun")

# The LoRA training job (finetune.backend: sagemaker).
TRAINING_ENTRYPOINT = ["python3", "-m", "containers.training.train_lora"]
TRAINING_CHANNELS = ("train", "review", "base_model")
LOSS_METRIC = {"Name": "train:loss", "Regex": r"loss=([0-9.eE+-]+)"}
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
REGISTER_OUTPUTS = ("ModelPackageArn", "Registered", "Reason")

ENTRYPOINT_MODULES = {
    EXTRACT: "containers.processing.extract_frames",
    CAPTION: "containers.processing.caption_images",
    EVALUATE: "containers.processing.evaluate",
}


@dataclass(frozen=True)
class _Context:
    config: StoryboardConfig
    settings: SageMakerSettings
    session: Any
    params: dict[str, Any]


def _input(name: str, source: Any, distribution: str = "FullyReplicated") -> Any:
    from sagemaker.core.shapes import ProcessingInput, ProcessingS3Input

    return ProcessingInput(
        input_name=name,
        s3_input=ProcessingS3Input(
            s3_uri=source, local_path=f"{PROCESSING_ROOT}/input/{name}", s3_data_type="S3Prefix",
            s3_input_mode="File", s3_data_distribution_type=distribution),
    )


def _output_uri(ctx: _Context, step: str, output: str, *suffix: str) -> Any:
    """``s3://<bucket>/<prefix>/<pipeline>/<execution-id>/<step>/<output>[/suffix...]`` as a Join."""
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join

    s = ctx.settings
    return Join(on="/", values=["s3:/", s.bucket, *s.prefix.split("/"), s.pipeline_name,
                                ExecutionVariables.PIPELINE_EXECUTION_ID, step, output, *suffix])


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


def _tags(config: StoryboardConfig) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(config.sagemaker.tags.items())]


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


def _dataset_uri(caption: Any) -> Any:
    return caption.properties.ProcessingOutputConfig.Outputs[DATASET_OUTPUT].S3Output.S3Uri


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


def _lora(ctx: _Context) -> bool:
    return ctx.config.finetune.backend == "sagemaker"


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


def pipeline_description(config: StoryboardConfig, settings: SageMakerSettings) -> str:
    """The pipeline description shown in Studio: what it does and what each parameter means (<= 3,072 chars)."""
    if config.sagemaker.description:
        return config.sagemaker.description
    model = "LoRA on an open-weights image model" if config.finetune.backend == "sagemaker" else \
        "Bedrock image model"
    text = (f"From animated film to an approved, fine-tuned {model} that draws the film's characters "
            "consistently. Parameters: ")
    specs = P.specs_for(config.finetune.backend)
    parts = [f"{spec.name}: {spec.description}" for spec in specs]
    full = text + " | ".join(parts)
    if len(full) <= 3072:
        return full
    short = text + ", ".join(spec.name for spec in specs) + " (see storyboard start --help)."
    return short[:3072]


def get_pipeline(config: StoryboardConfig, session: Any, settings: SageMakerSettings | None = None) -> Any:
    """Assemble the SageMaker ``Pipeline`` of DESIGN §1 from ``config``.

    Args:
        config: the validated ``pipeline.yaml``.
        session: a ``sagemaker.core.workflow.pipeline_context.PipelineSession`` whose default bucket is
            set (see :func:`pipeline.compile.make_pipeline_session`); nothing is sent through it while
            the pipeline is assembled or compiled.
        settings: resolved names (role, bucket, image, queues, Lambda ARN); default
            :func:`core.sagemaker_config.resolve_settings` of ``config``.

    Returns:
        ``sagemaker.mlops.workflow.pipeline.Pipeline`` with the parameters of
        :func:`pipeline.parameters.specs_for` the fine-tune backend and the top-level steps ExtractFrames,
        CaptionImages, HumanReview, FineTune (Training or Callback), Evaluate and, for the ``sagemaker``
        backend, CheckQuality (nesting RegisterModel and QualityGateFailed); for ``bedrock``,
        CheckModelTrained (nesting CheckQuality, RegisterModel and the two Fail steps).

    Raises:
        core.errors.InputError: a parameter default in ``sagemaker.parameters`` is invalid.
    """
    from sagemaker.mlops.workflow.pipeline import Pipeline

    settings = settings or resolve_settings(config)
    params = P.build_parameters(config, settings)
    ctx = _Context(config=config, settings=settings, session=session, params=params)
    extract = _extract_step(ctx)
    caption = _caption_step(ctx, extract)
    review = _review_step(ctx, caption)
    finetune = _finetune_training_step(ctx, caption, review) if _lora(ctx) else _finetune_step(ctx, review)
    provision = None if _lora(ctx) else provision_step(settings.finetune_queue_url, finetune,
                                                       params[P.EVALUATION_IMAGES])
    evaluate, report = _evaluate_step(ctx, caption, review, finetune, provision)
    register = _register_step(ctx, review, finetune, evaluate, report)
    gate = _gate_steps(ctx, finetune, evaluate, report, register)
    steps = [extract, caption, review, finetune, evaluate, gate]
    if provision is not None:
        release = release_step(settings.finetune_queue_url, provision, evaluate)
        steps = [extract, caption, review, finetune, provision, evaluate, release, gate]
    return Pipeline(
        name=settings.pipeline_name,
        parameters=list(params.values()),
        steps=steps,
        sagemaker_session=session,
        pipeline_experiment_config=None,
    )

