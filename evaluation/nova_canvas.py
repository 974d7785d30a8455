"""Amazon Nova Canvas ``TEXT_IMAGE`` through ``bedrock-runtime`` ``InvokeModel``: :class:`NovaCanvasGenerator`.

It serves the base model ID (``amazon.nova-canvas-v1:0``) or a fine-tuned model (its provisioned throughput
ARN; custom Nova Canvas models run only on Provisioned Throughput, DESIGN.md §5).

Answers that are not failures of the run (recorded per prompt, never raised):

- a blocked prompt: ``InvokeModel`` raises ``ValidationException`` whose message is the content filter's;
- a blocked output: HTTP 200 with an ``error`` field and fewer images than requested;
- throttling and transient service errors that persist after botocore's retries (its adaptive retry mode,
  ``evaluation.max_attempts`` attempts in all; botocore "Retries" guide): the generator has no loop of its own.

Access and model errors (``AccessDeniedException``, ``ResourceNotFoundException``, and a ``ValidationException``
whose message is not the content filter's, such as a wrong model ARN) stop the run with a
:class:`~evaluation.generators.GenerationError`, since every further request would fail the same way.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from core.errors import InputError
from evaluation.generators import GenerationError, GenerationOutcome, _as_png
from steps.retry_policy import is_retryable

if TYPE_CHECKING:
    from core.config import AwsConfig
    from core.evaluation_config import EvaluationConfig
    from evaluation.generators import Status
    from evaluation.prompt_set import TextImageRequest

log = logging.getLogger(__name__)

MIN_READ_TIMEOUT_S = 300  # Nova Canvas can take minutes per request (DESIGN.md §5)

# Errors that stop the run (every further request would fail the same way). A ValidationException means a
# blocked prompt only when its message is the content filter's ("This request has been blocked by our content
# filters."); any other ValidationException (an unknown model ID or ARN, a malformed request) is fatal too.
# Whether botocore retried an error is steps.retry_policy.is_retryable's answer (botocore's own rules).
FATAL_ERRORS = frozenset({"AccessDeniedException", "ResourceNotFoundException", "UnrecognizedClientException"})
CONTENT_FILTER_MESSAGE = re.compile(r"content filter", re.IGNORECASE)


def is_content_filter_message(message: str) -> bool:
    """True when a ``ValidationException``'s message is the content filter's (Bedrock: "This request has been
    blocked by our content filters.")."""
    return bool(CONTENT_FILTER_MESSAGE.search(message or ""))


class NovaCanvasGenerator:
    """Amazon Nova Canvas ``TEXT_IMAGE`` through ``bedrock-runtime`` ``InvokeModel``.

    Args:
        client: a ``bedrock-runtime`` client (use :meth:`from_config` for the project's retry and timeout
            policy: botocore's adaptive retries with ``evaluation.max_attempts`` attempts, read timeout at least
            300 s). Throttling and transient errors are retried by the client, not here.
        model_id: ``amazon.nova-canvas-v1:0`` for the base model, or the provisioned throughput ARN
            (``arn:aws:bedrock:<region>:<account>:provisioned-model/<id>``) of a fine-tuned model.
    """

    name = "nova-canvas"

    def __init__(self, client: Any, model_id: str) -> None:
        if not model_id:
            raise InputError("Nova Canvas model ID is empty; give the base model ID or a provisioned "
                             "throughput ARN")
        self.client = client
        self.model_id = model_id

    @classmethod
    def from_config(cls, config: EvaluationConfig, aws: AwsConfig, model_id: str,
                    client: Any = None) -> NovaCanvasGenerator:
        """Build a generator for ``model_id`` with a ``bedrock-runtime`` client from ``aws`` (region, profile),
        botocore's adaptive retries with ``config.max_attempts`` attempts in all, and a read timeout of at least
        300 s; ``client`` overrides it."""
        if client is None:
            from core.aws import client_from_config

            client = client_from_config("bedrock-runtime", aws, min_read_timeout_s=MIN_READ_TIMEOUT_S,
                                        total_max_attempts=config.max_attempts)
        return cls(client, model_id)

    def generate(self, request: TextImageRequest) -> GenerationOutcome:
        """Send ``request`` (validated first) and decode the answer.

        Raises:
            RequestValidationError: the request breaks a Nova Canvas limit (nothing is sent).
            GenerationError: access denied, unknown model, or a ValidationException whose message is not the
                content filter's (a wrong model ARN, a malformed request): every request would fail.
        """
        body = json.dumps(request.body())
        try:
            response = self.client.invoke_model(modelId=self.model_id, body=body,
                                                contentType="application/json", accept="application/json")
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            message = err.response.get("Error", {}).get("Message", str(err))
            attempt = int(err.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)) + 1
            if code == "ValidationException" and not is_content_filter_message(message):
                raise GenerationError(
                    f"InvokeModel on {self.model_id} was rejected with ValidationException: {message}. This is "
                    "not the content filter: check the model ID or provisioned throughput ARN (a custom Nova "
                    "Canvas model runs only on Provisioned Throughput) and the request settings in the "
                    "evaluation section") from err
            if code == "ValidationException":
                log.warning("prompt blocked (%s p%d seed %d): %s", request.character, request.prompt_index,
                            request.seed, message)
                return GenerationOutcome(request, "blocked_prompt", error=f"{code}: {message}", attempts=attempt)
            if code in FATAL_ERRORS:
                raise GenerationError(f"InvokeModel on {self.model_id} failed with {code}: {message}. "
                                      "Check the model ID or provisioned throughput ARN, the region, and "
                                      "bedrock:InvokeModel permission.") from err
            if is_retryable(err):
                log.warning("%s on %s after %d attempts (botocore's retries)", code, self.model_id, attempt)
            return GenerationOutcome(request, "failed", error=f"{code}: {message}", attempts=attempt)
        attempt = int(response.get("ResponseMetadata", {}).get("RetryAttempts", 0)) + 1
        try:
            payload = json.loads(response["body"].read())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            return GenerationOutcome(request, "failed", error=f"answer is not JSON: {err}", attempts=attempt)
        images: list[bytes] = []
        for k, encoded in enumerate(payload.get("images") or []):
            try:
                images.append(_as_png(base64.b64decode(encoded, validate=True), f"image {k} of the answer"))
            except (binascii.Error, ValueError) as err:
                return GenerationOutcome(request, "failed", error=f"image {k} of the answer: {err}",
                                         attempts=attempt)
        error = payload.get("error")
        if error or len(images) < request.number_of_images:
            status: Status = "partly_blocked" if images else "blocked_output"
            message = error or f"{len(images)} of {request.number_of_images} images returned"
            log.warning("output %s (%s p%d seed %d): %s", status, request.character, request.prompt_index,
                        request.seed, message)
            return GenerationOutcome(request, status, images=images, error=str(message), attempts=attempt)
        return GenerationOutcome(request, "ok", images=images[:request.number_of_images], attempts=attempt)


__all__ = ["NovaCanvasGenerator", "is_content_filter_message"]
