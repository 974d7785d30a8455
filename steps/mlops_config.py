"""The ``review``, ``finetune`` and ``registry`` sections of ``pipeline.yaml`` (steps 3, 4 and 7)."""

from __future__ import annotations

from pipeline.config_base import StrictModel


class ReviewConfig(StrictModel):
    """Human review (Amazon A2I) or the automatic local policy."""


class FineTuneConfig(StrictModel):
    """Bedrock model customization job for Nova Canvas."""


class RegistryConfig(StrictModel):
    """SageMaker Model Registry registration."""
