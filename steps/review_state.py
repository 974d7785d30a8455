"""The state of one running A2I review (``state.json``), and the decisions made from its loops once they
have all ended.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from core.errors import InputError
from steps.a2i_loops import decision_for_unfinished_loop, decision_from_output
from steps.human_loops import LoopStatus
from steps.review import ReviewDecision


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class ReviewState:
    """What completion needs to know about one running review, stored as ``state.json``.

    Attributes:
        execution_arn, callback_token: the pipeline execution and the step's callback token.
        key: :func:`steps.a2i_loops.execution_key` of the two; it is part of every loop name.
        manifest_uri: the labelling manifest reviewed.
        flow_definition_arn: where the loops run.
        output_uri: folder (URI) for the reviewed manifests.
        loops: ``[{"name", "item_id", "index"}]``, one per manifest record, in manifest order.
        created_at: ISO 8601 UTC time the review started.
    """

    execution_arn: str
    callback_token: str
    key: str
    manifest_uri: str
    flow_definition_arn: str
    output_uri: str
    loops: list[dict[str, Any]]
    created_at: str = field(default_factory=_now)

    def to_json(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReviewState:
        """Rebuild from :meth:`to_json`."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def age_hours(self, now: datetime | None = None) -> float:
        """Hours since the review started."""
        started = datetime.fromisoformat(self.created_at)
        return ((now or datetime.now(timezone.utc)) - started).total_seconds() / 3600.0


def decisions_from_loops(rows: Sequence[Mapping[str, Any]], state: ReviewState,
                         statuses: Mapping[str, LoopStatus],
                         outputs: Mapping[str, Mapping[str, Any]]) -> list[ReviewDecision]:
    """One decision per manifest row from the loops' final statuses and ``output.json`` documents.

    Args:
        rows: the labelling manifest, in the order the loops were started.
        state: the review state (loop per row).
        statuses: terminal :class:`LoopStatus` by loop name.
        outputs: parsed ``output.json`` by loop name (Completed loops).

    Raises:
        InputError: the manifest no longer matches the state (a different number of rows).
    """
    if len(rows) != len(state.loops):
        raise InputError(f"manifest {state.manifest_uri} has {len(rows)} records but the review started "
                         f"{len(state.loops)} human loops; it was changed during the review")
    decisions = []
    for row, loop in zip(rows, state.loops, strict=True):
        name, item_id = loop["name"], loop["item_id"]
        original = row.get("alt_text") or ""
        status = statuses.get(name)
        if status is not None and status.status == "Completed" and name in outputs:
            decisions.append(decision_from_output(outputs[name], item_id, original, name))
        else:
            decisions.append(decision_for_unfinished_loop(item_id, original, status.status if status else "missing",
                                                          status.failure if status else None, name))
    return decisions
