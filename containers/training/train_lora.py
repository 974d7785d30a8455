"""LoRA training entry point: ``python3 -m containers.training.train_lora`` (the training image's ENTRYPOINT).

Layout (``<root>`` is ``/opt/ml`` unless ``$STORYBOARD_OPT_ML`` moves it):

- ``<root>/input/config/hyperparameters.json``: string values (:mod:`core.lora_settings`);
- ``<root>/input/data/train/``: the CaptionImages dataset (``train.jsonl``, ``crops/``, ``manifest.jsonl``);
- ``<root>/input/data/review/`` (optional): the HumanReview output; its manifest is then the training set;
- ``<root>/input/data/base_model/``: a diffusers Stable Diffusion XL folder;
- ``<root>/model/``: the LoRA weights, ``training_config.json``, ``training_log.jsonl``, ``README.md``;
- ``<root>/checkpoints/``: ``checkpoint-<step>/`` (SageMaker syncs it with the checkpoint S3 URI);
- ``<root>/output/failure``: the error message when the job fails.

Command-line arguments are ignored: SageMaker runs the image as ``docker run <image> train``.

Exit status: 0 trained; 2 bad input (one ``error: ...`` line, before any training); 1 any other failure.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path

OPT_ML = Path("/opt/ml")
OPT_ML_ENV = "STORYBOARD_OPT_ML"


def opt_ml_root() -> Path:
    """``$STORYBOARD_OPT_ML`` or ``/opt/ml``."""
    return Path(os.environ.get(OPT_ML_ENV) or OPT_ML)


def read_hyperparameters(path: Path) -> dict:
    """The hyperparameters file as a dict (``{}`` when absent).

    Raises:
        core.errors.InputError: the file is not a JSON object.
    """
    from core.errors import InputError

    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object of hyperparameters, got {type(data).__name__}")
    return data


def main(root: Path | None = None) -> int:
    """Validate the inputs, train, write ``<root>/model``; returns 0 (raises on failure)."""
    from steps.lora import parse_hyperparameters, run_lora_training

    root = root or opt_ml_root()
    settings = parse_hyperparameters(read_hyperparameters(root / "input" / "config" / "hyperparameters.json"))
    data = root / "input" / "data"
    review = data / "review"
    run_lora_training(settings, train_dir=data / "train", base_dir=data / "base_model", model_dir=root / "model",
                      checkpoints_dir=root / "checkpoints", review_dir=review if review.is_dir() else None,
                      emit=lambda line: print(line, flush=True))
    return 0


def _write_failure(root: Path, message: str) -> None:
    """``<root>/output/failure``: SageMaker shows its text as the job's FailureReason."""
    try:
        from core.io import write_text

        write_text(root / "output" / "failure", message[:4000] + "\n")
    except OSError as err:  # the message still reaches stderr
        print(f"could not write {root / 'output' / 'failure'}: {err}", file=sys.stderr)


def run() -> int:
    """:func:`main` with logging and the exit-code convention (2 bad input, 1 other failure)."""
    from core.errors import InputError

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    root = opt_ml_root()
    try:
        return main(root)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        _write_failure(root, f"InputError: {err}")
        return 2
    except Exception as err:  # noqa: BLE001 - every failure must leave the failure file
        traceback.print_exc()
        _write_failure(root, f"{type(err).__name__}: {err}")
        return 1


if __name__ == "__main__":
    sys.exit(run())
