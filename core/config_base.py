"""Base class for every configuration section: unknown keys and wrong types are errors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A pydantic model that rejects unknown keys and re-validates on assignment.

    Every section of ``pipeline.yaml`` derives from it, so a typo such as ``sampling: {evry: 2}``
    fails with the key's dotted path instead of being silently ignored.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)
