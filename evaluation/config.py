"""The ``evaluation`` section of ``pipeline.yaml`` (step 5, Evaluate)."""

from __future__ import annotations

from pipeline.config_base import StrictModel


class EvaluationConfig(StrictModel):
    """Storyboard prompts, image generation settings and metric settings for the Evaluate step."""
