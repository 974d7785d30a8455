"""The ``sagemaker`` section of ``pipeline.yaml``: pipeline name, role, images, queues, parameters."""

from __future__ import annotations

from pipeline.config_base import StrictModel


class SageMakerConfig(StrictModel):
    """Settings of the SageMaker Pipeline definition."""
