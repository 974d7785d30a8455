"""The configuration the processing containers receive (``PipelineConfigS3Uri``): ``pipeline.yaml`` less what means
nothing in a container, as canonical JSON, so that equal configurations give equal bytes and one S3 key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.config import StoryboardConfig


def container_config(config: StoryboardConfig) -> dict[str, Any]:
    """The configuration the processing containers receive, as a JSON-ready mapping.

    Reference image paths on this machine mean nothing in a container: string references that are
    not URIs are dropped (the container reads the references from ``ReferencesS3Uri``), and so are the
    machine-specific ``aws.profile`` and the ``sagemaker`` section (containers do not need it).
    """
    import re

    data = config.model_dump(mode="json")
    data.pop("sagemaker", None)
    if isinstance(data.get("aws"), dict):
        data["aws"]["profile"] = None
    for character in data.get("characters", []):
        character["references"] = [
            ref for ref in character.get("references", [])
            if not isinstance(ref, str) or re.match(r"^[a-z0-9]+://", ref)
        ]
    return data


def container_config_bytes(config: StoryboardConfig) -> bytes:
    """:func:`container_config` as canonical JSON bytes (sorted keys): equal configs give equal bytes."""
    import json

    return (json.dumps(container_config(config), sort_keys=True, indent=1) + "\n").encode("utf-8")
