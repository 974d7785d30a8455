"""A2I review progress in constant S3 requests per event: one marker per loop, one counter per review.

``<review folder>/progress.json`` holds ``{"total", "done", "flowDefinitionArn"}``. A finished loop's event writes
its marker ``loops/<loop-name>.json`` with ``If-None-Match: *`` (only the first event of a loop creates it), and
only that first event increments ``done`` with a compare-and-swap (``If-Match`` on the ETag just read, retried
when another event won). So an event costs a fixed number of requests (read the counter, check the answer, create
the marker, swap the counter) whatever the number of loops, duplicates change nothing, and the review is
answered when ``done`` reaches ``total``; only then are the markers listed and read, once.

A crash between the marker and the counter leaves the counter one short; the reconciler, which lists the
markers anyway, completes such a review. Source for the conditions: Amazon S3 user guide, "Conditional writes".
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from containers.lambda_handlers.storage import ObjectStore, join_uri
from steps.human_loops import LoopStatus

log = logging.getLogger(__name__)

PROGRESS_FILE = "progress.json"
SWAP_ATTEMPTS = 100  # at most this many concurrent events can win before this one gives up (and is retried)


class ProgressContention(RuntimeError):
    """The counter changed under every attempt; the event should be delivered again."""


@dataclass(frozen=True)
class Progress:
    """The counter: loops in the review, loops finished, the flow definition, and the object's version tag."""

    total: int
    done: int
    flow_definition_arn: str
    version: str

    def to_bytes(self, done: int) -> bytes:
        """The counter's JSON with ``done`` replaced."""
        return json.dumps({"total": self.total, "done": done, "flowDefinitionArn": self.flow_definition_arn}
                          ).encode("utf-8")


def progress_uri(folder: str) -> str:
    """``<folder>/progress.json``."""
    return join_uri(folder, PROGRESS_FILE)


def marker_uri(folder: str, loop_name: str) -> str:
    """``<folder>/loops/<loop-name>.json``."""
    return join_uri(folder, "loops", f"{loop_name}.json")


def marker_bytes(status: LoopStatus) -> bytes:
    """A loop's marker: name, status, output URI, failure reason."""
    return json.dumps({"name": status.name, "status": status.status, "outputS3Uri": status.output_uri,
                       "failureReason": status.failure}, indent=2).encode("utf-8")


def initialise(store: ObjectStore, folder: str, total: int, flow_definition_arn: str, done: int = 0) -> None:
    """Create the counter unless it exists (before any loop starts, so the first event finds it)."""
    store.create_if_absent(progress_uri(folder), Progress(total, 0, flow_definition_arn, "").to_bytes(done))


def read(store: ObjectStore, folder: str) -> Progress | None:
    """The counter, or ``None`` (a review started before counters existed, or not a review)."""
    found = store.read_versioned(progress_uri(folder))
    if found is None:
        return None
    data = json.loads(found[0].decode("utf-8"))
    return Progress(int(data["total"]), int(data["done"]), str(data.get("flowDefinitionArn") or ""), found[1])


def record(store: ObjectStore, folder: str, status: LoopStatus, progress: Progress) -> tuple[bool, int, int]:
    """Record a finished loop: ``(first time, done, total)``.

    Raises:
        ProgressContention: the counter kept changing for ``SWAP_ATTEMPTS`` attempts.
    """
    if not store.create_if_absent(marker_uri(folder, status.name), marker_bytes(status)):
        return False, progress.done, progress.total  # a duplicate event: the loop is counted already
    current: Progress | None = progress
    for _ in range(SWAP_ATTEMPTS):
        if current is None:
            raise ProgressContention(f"review counter {progress_uri(folder)} disappeared")
        if store.replace_if_unchanged(progress_uri(folder), current.to_bytes(current.done + 1), current.version):
            return True, current.done + 1, current.total
        current = read(store, folder)
    raise ProgressContention(f"review counter {progress_uri(folder)} changed {SWAP_ATTEMPTS} times in a row")


def recount(store: ObjectStore, folder: str, done: int) -> None:
    """Set ``done`` to the number of markers found by a listing (the reconciler), whatever it was."""
    current = read(store, folder)
    while current is not None and current.done != done:
        if store.replace_if_unchanged(progress_uri(folder), current.to_bytes(done), current.version):
            return
        current = read(store, folder)
