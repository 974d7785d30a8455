"""Whether an error raised while starting AWS work may succeed if the same request is sent again.

The classification is botocore's own (the checkers of ``botocore.retries.standard.StandardRetryConditions``,
behind the ``standard`` and ``adaptive`` retry modes, less its DynamoDB/STS special cases): throttling error
codes (``ThrottlingException``, ``SlowDown``, ...), HTTP 429, transient codes and HTTP 500/502/503/504,
connection and read-timeout errors, and errors the service model marks ``retryable``. Everything else
(``AccessDeniedException``, a ``ValidationException`` such as a role Bedrock cannot assume,
``ResourceNotFoundException``, our own :class:`~core.errors.InputError`, a bug) is permanent: sending the
request again gives the same answer.

Source: botocore ``retries/standard.py``; AWS SDKs and Tools reference guide, "Retry behavior".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from botocore.retries.standard import (
    ModeledRetryableChecker,
    OrRetryChecker,
    RetryContext,
    ThrottledRetryableChecker,
    ThrottlingStatusCodeChecker,
    TransientRetryableChecker,
)

_CONDITIONS = OrRetryChecker([TransientRetryableChecker(), ThrottledRetryableChecker(),
                              ThrottlingStatusCodeChecker(), ModeledRetryableChecker()])


@dataclass(frozen=True)
class _Status:
    status_code: int


def _context(error: BaseException, operation_model: Any = None) -> RetryContext:
    if isinstance(error, ClientError):
        response = error.response or {}
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        return RetryContext(attempt_number=1, operation_model=operation_model, parsed_response=response,
                            http_response=_Status(int(status)) if status else None)
    return RetryContext(attempt_number=1, caught_exception=error)


def is_retryable(error: BaseException, operation_model: Any = None) -> bool:
    """True when a retry may fix ``error`` (throttling, 5xx, a connection error), by botocore's rules.

    Args:
        error: the exception raised; a :class:`botocore.exceptions.ClientError` is judged by its error code and
            HTTP status, a botocore connection error is transient, anything else is permanent.
        operation_model: the failed operation's ``botocore`` model, if known, so that errors the service
            model marks ``retryable`` count too.
    """
    return bool(_CONDITIONS.is_retryable(_context(error, operation_model)))


def describe_error(error: BaseException) -> str:
    """``"<Code>: <message>"`` for a ClientError, ``"<ExceptionClass>: <text>"`` otherwise (one line)."""
    if isinstance(error, ClientError):
        err = (error.response or {}).get("Error") or {}
        return f"{err.get('Code') or 'ClientError'}: {err.get('Message') or error}"
    return f"{type(error).__name__}: {error}"
