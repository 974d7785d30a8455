"""The training job's model artifact: ``model.tar.gz`` (SageMaker tars ``/opt/ml/model``) and its log.

The archive holds ``pytorch_lora_weights.safetensors``, ``training_config.json``, ``training_log.jsonl``
and ``README.md`` at its top level (see :mod:`steps.lora.export`).
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from core.errors import InputError
from steps.lora.model import LORA_WEIGHTS_NAME

MODEL_ARCHIVE = "model.tar.gz"
TRAINING_LOG = "training_log.jsonl"
TRAINING_CONFIG = "training_config.json"


def _weights_folder(folder: Path) -> Path | None:
    """``folder`` or its only sub-folder holding the LoRA weights (archives made with a top folder)."""
    if (folder / LORA_WEIGHTS_NAME).is_file():
        return folder
    found = sorted(p.parent for p in folder.glob(f"*/{LORA_WEIGHTS_NAME}"))
    return found[0] if len(found) == 1 else None


def unpack_model_artifacts(source: str | Path, dest: str | Path) -> Path:
    """The folder holding ``pytorch_lora_weights.safetensors`` for a training job's output.

    ``source`` is a ``model.tar.gz`` file, a folder holding one, or an already-extracted folder (returned
    as is, nothing copied). An archive is extracted into ``dest`` (through a temporary sibling, then
    renamed; an existing complete ``dest`` is reused). Members with absolute paths, ``..``, links or
    devices are refused (``tarfile``'s ``data`` filter).

    Raises:
        InputError: ``source`` is missing, not a gzip tar, or holds no LoRA weights file.
    """
    source, dest = Path(source), Path(dest)
    if not source.exists():
        raise InputError(f"model artifacts {source}: no such file or folder; pass the training job's "
                         f"{MODEL_ARCHIVE} or its extracted folder")
    if source.is_dir():
        extracted = _weights_folder(source)
        if extracted is not None:
            return extracted
        archive = source / MODEL_ARCHIVE
        if not archive.is_file():
            raise InputError(f"model artifacts {source}: neither {LORA_WEIGHTS_NAME} nor {MODEL_ARCHIVE} in it")
    else:
        archive = source
    if dest.is_dir():
        ready = _weights_folder(dest)
        if ready is not None:
            return ready
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError, EOFError) as err:
            raise InputError(f"model artifacts {archive}: not a readable gzip tar ({err})") from None
        if _weights_folder(tmp) is None:
            raise InputError(f"model artifacts {archive}: no {LORA_WEIGHTS_NAME} in the archive; was it made "
                             "by the LoRA training job?")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.chmod(0o755)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _weights_folder(dest) or dest


def read_training_log(folder: str | Path) -> list[dict[str, Any]]:
    """The rows of ``folder/training_log.jsonl``: one dict per logged step, keys ``step`` (int), ``loss``,
    ``lr`` (floats) and ``elapsed_s`` (seconds since training started), in step order.

    Raises:
        InputError: the file is missing or a line is not a JSON object.
    """
    from core.io import read_jsonl

    path = Path(folder) / TRAINING_LOG
    if not path.is_file():
        raise InputError(f"{path}: no training log; pass the extracted model artifacts of a LoRA training job")
    return sorted(read_jsonl(path), key=lambda row: row.get("step", 0))
