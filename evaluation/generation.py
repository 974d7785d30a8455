"""Storyboard image generation: run a prompt set through one generator and write its images and log.

:func:`generate_prompt_set` runs the requests of :func:`evaluation.prompt_set.build_requests` through an
:class:`~evaluation.generators.ImageGenerator` and writes ``DIR/<character>/<character>_p<k>_s<seed>_<i>.png``
plus ``DIR/generation_log.json`` (:class:`GenerationLog`; read back by :func:`read_generation_log`).

Where the rest lives:

- ``evaluation.prompt_set``: the requests (:class:`~evaluation.prompt_set.TextImageRequest`), their validation
  against the Nova Canvas ``TEXT_IMAGE`` or diffusers limits, and the image names;
- ``evaluation.generators``: the generator interface (outcome, protocol, the ``GenerationError`` that stops a
  run) and ``FolderImageGenerator`` (offline; images already in ``DIR/<character>/``);
- ``evaluation.nova_canvas.NovaCanvasGenerator``: Amazon Nova Canvas through ``bedrock-runtime``
  ``InvokeModel``, for the base model ID or a fine-tuned model's provisioned throughput ARN (what counts as a
  blocked prompt or output, what is retried, what stops the run);
- ``evaluation.diffusers_generator.DiffusersGenerator``: Stable Diffusion XL base or base+LoRA through
  diffusers, in process (the ``sagemaker`` fine-tune backend).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import InputError
from core.io import write_bytes, write_json
from evaluation.generators import GenerationOutcome, ImageGenerator

if TYPE_CHECKING:
    from evaluation.prompt_set import TextImageRequest

log = logging.getLogger(__name__)

GENERATION_LOG = "generation_log.json"


@dataclass
class GenerationLog:
    """The result of :func:`generate_prompt_set`: every outcome, and the log path.

    ``counts`` maps each status to its number of requests; ``images`` is the number of images written.
    """

    model_id: str
    generator: str
    outcomes: list[GenerationOutcome]
    path: Path

    @property
    def counts(self) -> dict[str, int]:
        """Requests per status."""
        counts: dict[str, int] = {}
        for outcome in self.outcomes:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        return counts

    @property
    def images(self) -> int:
        """Images written."""
        return sum(len(o.files) for o in self.outcomes)

    def to_json(self) -> dict[str, Any]:
        """The ``generation_log.json`` document."""
        return {
            "model_id": self.model_id,
            "generator": self.generator,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "requests": len(self.outcomes),
            "images": self.images,
            "counts": self.counts,
            "records": [o.to_json() for o in self.outcomes],
        }


def generate_prompt_set(generator: ImageGenerator, requests: Sequence[TextImageRequest], out_dir: str | Path,
                        concurrency: int = 1, progress: bool = False) -> GenerationLog:
    """Run every request and write ``out_dir/<character>/<character>_p<k>_s<seed>_<i>.png`` plus
    ``out_dir/generation_log.json`` (atomically).

    A blocked prompt or output, or a request still throttled after its retries, is recorded in the log
    and the run goes on. ``concurrency`` requests run in parallel (1..16). ``progress`` shows a tqdm bar
    over the requests (on stderr).

    Raises:
        RequestValidationError: a request breaks its backend's limits (checked for all before any is sent).
        GenerationError: the model cannot be reached at all (access, unknown ID).
    """
    from tqdm import tqdm

    if not 1 <= concurrency <= 16:
        raise ValueError(f"concurrency must be 1..16, got {concurrency}")
    for request in requests:
        request.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def run(request: TextImageRequest) -> GenerationOutcome:
        outcome = generator.generate(request)
        names = request.file_names()
        files = []
        for name, data in zip(names, outcome.images[:len(names)], strict=False):
            write_bytes(out_dir / request.character / name, data)
            files.append(f"{request.character}/{name}")
        outcome.files = files
        return outcome

    with tqdm(total=len(requests), desc=f"{generator.name} prompt set", unit="request", disable=not progress) as bar:
        def step(request: TextImageRequest) -> GenerationOutcome:
            outcome = run(request)
            bar.update(1)
            return outcome

        if concurrency == 1 or len(requests) <= 1:
            outcomes = [step(r) for r in requests]
        else:
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                outcomes = list(pool.map(step, requests))
    for outcome in outcomes:
        outcome.images = []  # written; free the memory
    result = GenerationLog(model_id=generator.model_id, generator=generator.name, outcomes=outcomes,
                           path=out_dir / GENERATION_LOG)
    write_json(result.path, result.to_json())
    log.info("generated %d images for %d requests with %s: %s", result.images, len(outcomes),
             generator.model_id, result.counts)
    return result


def read_generation_log(images_dir: str | Path) -> dict[str, Any] | None:
    """Read ``images_dir/generation_log.json`` if it exists (``None`` otherwise).

    Raises:
        InputError: the file exists but is not a JSON object with a ``records`` list.
    """
    path = Path(images_dir) / GENERATION_LOG
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"{path} is not valid JSON ({err.msg}); delete it or re-run the generation") from None
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise InputError(f"{path} has no 'records' list; it is not a generation log of this project")
    return data


__all__ = ["GENERATION_LOG", "GenerationLog", "generate_prompt_set", "read_generation_log"]
