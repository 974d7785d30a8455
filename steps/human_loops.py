"""Starting, stopping and describing human loops: the :class:`HumanLoops` protocol and its Amazon A2I runtime
implementation (:class:`A2IHumanLoops`); the local review page implements the same protocol
(:class:`steps.local_review.LocalHumanLoops`).

Loop statuses (SageMaker A2I API reference): InProgress, Completed, Failed, Stopped, Stopping.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)

TERMINAL_LOOP_STATUSES = ("Completed", "Failed", "Stopped")


@dataclass(frozen=True)
class LoopStatus:
    """A human loop's state: ``status`` (InProgress, Completed, Failed, Stopped, Stopping), where its
    ``output.json`` is (Completed only) and why it failed."""

    name: str
    status: str
    output_uri: str | None = None
    failure: str | None = None

    @property
    def terminal(self) -> bool:
        """Completed, Failed or Stopped."""
        return self.status in TERMINAL_LOOP_STATUSES


@runtime_checkable
class HumanLoops(Protocol):
    """Starts, stops and describes human loops of one flow definition."""

    def start(self, name: str, input_content: str) -> None:
        """Start loop ``name``; starting an existing loop again is not an error (idempotent)."""
        ...

    def stop(self, name: str) -> None:
        """Stop loop ``name``; a loop that is unknown or already ended is not an error."""
        ...

    def status(self, name: str) -> LoopStatus:
        """The loop's current :class:`LoopStatus`."""
        ...


class A2IHumanLoops:
    """Amazon A2I runtime (``sagemaker-a2i-runtime``) for one flow definition."""

    def __init__(self, a2i_client: Any, flow_definition_arn: str) -> None:
        self.a2i = a2i_client
        self.flow_definition_arn = flow_definition_arn

    def start(self, name: str, input_content: str) -> None:
        """``start_human_loop``; ``ConflictException`` (the name exists) means it was started already."""
        from botocore.exceptions import ClientError

        try:
            self.a2i.start_human_loop(HumanLoopName=name, FlowDefinitionArn=self.flow_definition_arn,
                                      HumanLoopInput={"InputContent": input_content})
        except ClientError as err:
            code = err.response["Error"].get("Code")
            message = err.response["Error"].get("Message", "")
            if code == "ConflictException" or "already exists" in message.lower():
                log.info("human loop %s already exists", name)
                return
            raise

    def stop(self, name: str) -> None:
        """``stop_human_loop``; a missing or finished loop is ignored."""
        from botocore.exceptions import ClientError

        try:
            self.a2i.stop_human_loop(HumanLoopName=name)
        except ClientError as err:
            if err.response["Error"].get("Code") in ("ResourceNotFoundException", "ValidationException",
                                                     "ConflictException"):
                log.info("human loop %s not stopped: %s", name, err.response["Error"].get("Message"))
                return
            raise

    def status(self, name: str) -> LoopStatus:
        """``describe_human_loop``."""
        out = self.a2i.describe_human_loop(HumanLoopName=name)
        return LoopStatus(name, out["HumanLoopStatus"], (out.get("HumanLoopOutput") or {}).get("OutputS3Uri"),
                          out.get("FailureReason"))
