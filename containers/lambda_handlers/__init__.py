"""AWS Lambda entry points of the storyboard pipeline, and their local in-process counterparts.

One container image (``containers/lambda/Dockerfile``) serves every function; each function sets its
handler (the image's CMD) to one of:

- ``containers.lambda_handlers.callback_consumer.handler``: SQS queue of the CallbackSteps (event source
  mapping with ``ReportBatchItemFailures``; environment ``STORYBOARD_CALLBACK_MAX_RECEIVE_COUNT`` = the queue's
  redrive ``maxReceiveCount``). HumanReview: run the automatic policy or start the A2I human loops; FineTune:
  start the Bedrock job (or its dry run); ProvisionEvaluationModel / ReleaseEvaluationModel: the Bedrock
  backend's evaluation throughput; a ``Stopping`` message: stop them and answer. Every error a retry cannot
  fix fails the step.
- ``containers.lambda_handlers.finetune_handlers.job_state_handler``: EventBridge, source
  ``aws.bedrock``, detail-type ``Model Customization Job State Change``; answers the FineTune callback.
- ``containers.lambda_handlers.review_handlers.human_loop_status_handler``: EventBridge, source
  ``aws.sagemaker``, detail-type ``SageMaker A2I HumanLoop Status Change``; answers the HumanReview
  callback once every loop of the review is done.
- ``containers.lambda_handlers.reconciler.handler``: EventBridge schedule (every few minutes: it also answers
  the evaluation throughput's step once InService); answers jobs and reviews whose events were missed, enforces
  the watchdogs, deletes evaluation throughputs of ended executions and retries approvals that failed.
- ``containers.lambda_handlers.evaluation_throughput.execution_status_handler``: EventBridge, source
  ``aws.sagemaker``, detail-type ``SageMaker Model Building Pipeline Execution Status Change``; deletes the
  evaluation throughput of an execution that ended.
- ``containers.lambda_handlers.register_model.handler``: the RegisterModel LambdaStep; creates the
  model package (idempotent).
- ``containers.lambda_handlers.approval.handler``: EventBridge ``SageMaker Model Package State
  Change`` (and ``SageMaker Endpoint State Change`` for the deferred clean-up). A LoRA package
  (``finetune.backend: sagemaker``): Approved creates, or updates to the new version, the real-time
  endpoint serving base + LoRA (``containers/inference/``); Rejected deletes what its deployment created. A
  Bedrock package: Approved creates or re-points the group's Provisioned Throughput; Rejected deletes it if it
  serves the rejected model, then the custom model.

Configuration comes from ``pipeline.yaml`` (:mod:`containers.lambda_handlers.runtime`). Where the
callback token is kept between the start and the completion event: on the Bedrock job as a tag (a
token is exactly 10 characters; tag values hold 256), and for a review in ``state.json`` under
``review.output_s3_uri`` plus each loop's input content (A2I echoes it in ``output.json``).

:mod:`containers.lambda_handlers.local` exposes the offline handlers the local runner calls.
"""
