"""``storyboard prepare``: ExtractFrames then CaptionImages on one machine, into one folder.

The two stages are the same functions the two processing steps of the SageMaker Pipeline run
(:func:`steps.extract.run_extract` and :func:`steps.caption.run_caption`); here CaptionImages works in
place on the ExtractFrames output.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.config import StoryboardConfig
from steps.caption import run_caption
from steps.extract import run_extract


def run_prepare(videos: Sequence[str | Path], characters_dir: str | Path | None, out_dir: str | Path,
                config: StoryboardConfig, overwrite: bool = False, image_uri_prefix: str | None = None,
                progress: bool = True) -> dict[str, Any]:
    """Prepare a validated Nova Canvas training set from ``videos``; returns ``summary.json``'s document.

    Raises:
        InputError (and its subclasses NoCharacterFoundError, TooFewRecordsError): see the two stages.
    """
    run_extract(videos, characters_dir, out_dir, config, overwrite=overwrite, progress=progress)
    return run_caption([out_dir], out_dir, config, image_uri_prefix=image_uri_prefix, progress=progress)
