"""Wait for an Amazon A2I flow definition to become Active before any human loop is started on it.

``CreateFlowDefinition`` returns at once with the flow definition ``Initializing``; ``StartHumanLoop`` on a flow
definition that is not ``Active`` is refused. ``DescribeFlowDefinition`` reports ``FlowDefinitionStatus``
(Initializing, Active, Failed, Deleting) and, when Failed, ``FailureReason`` (SageMaker API reference,
``DescribeFlowDefinition``). botocore has no waiter for it, so this polls with a bounded wait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from core.errors import InputError

log = logging.getLogger(__name__)

ACTIVE_TIMEOUT_S = 120.0
POLL_S = 5.0


def await_flow_definition_active(sagemaker: Any, name: str, timeout_s: float = ACTIVE_TIMEOUT_S,
                                 poll_s: float = POLL_S, sleep: Callable[[float], None] = time.sleep,
                                 clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Poll ``describe_flow_definition`` until the flow definition is Active; return the description.

    Args:
        sagemaker: a boto3 ``sagemaker`` client.
        name: the flow definition's name (or ARN).
        timeout_s: the longest wait in seconds (default 120; keep it well under the Lambda's timeout).
        poll_s: seconds between two describes.

    Raises:
        InputError: the flow definition is Failed (its FailureReason quoted) or Deleting, or still not Active
            after ``timeout_s``: no human loop can start on it.
    """
    deadline = clock() + timeout_s
    while True:
        found = sagemaker.describe_flow_definition(FlowDefinitionName=name)
        status = found.get("FlowDefinitionStatus")
        if status == "Active":
            return found
        if status == "Failed":
            raise InputError(f"flow definition {name} is Failed ({found.get('FailureReason') or 'no reason given'}); "
                             f"delete it or set review.flow_definition_name to a new name")
        if status == "Deleting":
            raise InputError(f"flow definition {name} is being deleted; set review.flow_definition_name to a new "
                             f"name or wait until it is gone")
        if clock() + poll_s > deadline:
            raise InputError(f"flow definition {name} is still {status} after {timeout_s:g} s; no human loop was "
                             f"started (the message is answered with this failure; start the execution again)")
        log.info("flow definition %s is %s; waiting %g s", name, status, poll_s)
        sleep(poll_s)
