"""The SageMaker Pipeline (SDK v3): seven steps assembled from configuration, no business logic.

This module assembles the pipeline and writes its description; each step is built by the module of its kind
(:mod:`pipeline.processing_steps`, :mod:`pipeline.callback_steps`, :mod:`pipeline.training_step`,
:mod:`pipeline.evaluation_throughput_steps`, :mod:`pipeline.gate_steps`) from the names in
:mod:`pipeline.step_names` and the context of :mod:`pipeline.step_context`.

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

from typing import TYPE_CHECKING, Any

from core.sagemaker_config import SageMakerSettings, resolve_settings
from pipeline import parameters as P
from pipeline.callback_steps import _finetune_step, _review_step
from pipeline.evaluation_throughput_steps import provision_step, release_step
from pipeline.gate_steps import _gate_steps, _register_step
from pipeline.parameter_values import build_parameters
from pipeline.processing_steps import _caption_step, _evaluate_step, _extract_step
from pipeline.step_context import _Context, _lora
from pipeline.training_step import _finetune_training_step

if TYPE_CHECKING:
    from core.config import StoryboardConfig


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
    params = build_parameters(config, settings)
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
