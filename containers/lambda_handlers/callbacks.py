"""Answering a CallbackStep: ``send_pipeline_execution_step_success`` / ``..._failure``.

Limits (SageMaker API reference): ``CallbackToken`` exactly 10 characters ``[a-zA-Z0-9]``;
``OutputParameters`` at most 50, names at most 256 and values at most 1,024 characters;
``FailureReason`` at most 256 characters; ``ClientRequestToken`` 32 to 128 characters, making a
repeated answer idempotent. The handlers derive that token from the callback token and what is being
answered, so a duplicate event sends the very same request.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from core.errors import InputError

log = logging.getLogger(__name__)

FAILURE_REASON_MAX = 256
OUTPUT_VALUE_MAX = 1024
OUTPUT_PARAMETERS_MAX = 50


def truncate_reason(text: str, limit: int = FAILURE_REASON_MAX) -> str:
    """``text`` on one line, cut to ``limit`` characters with a trailing ``...`` when it was longer."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 3].rstrip() + "..."


def request_token(kind: str, callback_token: str, *parts: str) -> str:
    """A 64-hex ``ClientRequestToken`` for answering ``callback_token`` with ``kind`` (success/failure)."""
    return hashlib.sha256("|".join((kind, callback_token, *parts)).encode("utf-8")).hexdigest()


def output_parameters(outputs: Mapping[str, str]) -> list[dict[str, str]]:
    """``[{"Name", "Value"}]`` with string values.

    Raises:
        InputError: more than 50 outputs or a value over 1,024 characters.
    """
    if len(outputs) > OUTPUT_PARAMETERS_MAX:
        raise InputError(f"{len(outputs)} output parameters; a callback step takes at most {OUTPUT_PARAMETERS_MAX}")
    params = []
    for name, value in outputs.items():
        value = "" if value is None else str(value)
        if len(value) > OUTPUT_VALUE_MAX:
            raise InputError(f"output parameter {name} is {len(value)} characters (at most {OUTPUT_VALUE_MAX})")
        params.append({"Name": str(name), "Value": value})
    return params


@runtime_checkable
class PipelineCallback(Protocol):
    """Answers a pipeline's CallbackStep."""

    def success(self, callback_token: str, outputs: Mapping[str, str], idempotency_key: str = "") -> bool:
        """Report success with output parameters; ``False`` when the pipeline no longer accepts the token."""
        ...

    def failure(self, callback_token: str, reason: str, idempotency_key: str = "") -> bool:
        """Report failure (the reason is cut to 256 characters); ``False`` as for :meth:`success`."""
        ...


class SageMakerPipelineCallback:
    """The AWS backend: the ``sagemaker`` client.

    A ``ValidationException`` or ``ResourceNotFound`` answer (the token was already used, or the
    execution ended) is logged and reported as ``False`` rather than raised, so a late duplicate event
    does not retry forever.
    """

    def __init__(self, sagemaker_client: Any) -> None:
        self.sm = sagemaker_client

    def _call(self, method: str, **kwargs: Any) -> bool:
        from botocore.exceptions import ClientError

        try:
            getattr(self.sm, method)(**kwargs)
            return True
        except ClientError as err:
            code = err.response["Error"].get("Code")
            if code in ("ValidationException", "ResourceNotFound"):
                log.warning("%s not accepted (%s): %s", method, code, err.response["Error"].get("Message"))
                return False
            raise

    def success(self, callback_token: str, outputs: Mapping[str, str], idempotency_key: str = "") -> bool:
        """``send_pipeline_execution_step_success``."""
        return self._call("send_pipeline_execution_step_success", CallbackToken=callback_token,
                          OutputParameters=output_parameters(outputs),
                          ClientRequestToken=request_token("success", callback_token, idempotency_key))

    def failure(self, callback_token: str, reason: str, idempotency_key: str = "") -> bool:
        """``send_pipeline_execution_step_failure`` with the reason cut to 256 characters."""
        return self._call("send_pipeline_execution_step_failure", CallbackToken=callback_token,
                          FailureReason=truncate_reason(reason),
                          ClientRequestToken=request_token("failure", callback_token, idempotency_key))
