"""Amazon Titan Multimodal Embeddings G1 on Bedrock as an :class:`core.embeddings.TextImageEmbedder`.

Request and response (Bedrock user guide, "Amazon Titan Multimodal Embeddings G1", model parameters):

- request body ``{"inputImage": <base64 JPEG/PNG>, "embeddingConfig": {"outputEmbeddingLength": 256|384|1024}}``
  or ``{"inputText": ..., "embeddingConfig": ...}``; sent with ``invoke_model`` on ``amazon.titan-embed-image-v1``;
- response body ``{"embedding": [float, ...], "inputTextTokenCount": int, "message": str | null}``.

Images are embedded alone: a body with both text and image returns the average of the two embeddings
(same page), which would blur image-to-image similarity.

Limits respected here:

- images: the model page lists at most 25 MB and 2,048 x 2,048 px; DESIGN §5 plans for 5 MB, so every
  image is downscaled to a longer side of at most 2,048 px and re-encoded until its base64 string is
  at most 5 MB (:data:`TITAN_MAX_IMAGE_B64_BYTES`);
- text: the model card has listed 128 input tokens for G1 (the current English page says 256). Texts are
  cut on a word boundary to a conservative estimate of 128 tokens (:func:`truncate_for_titan`: every
  word counts ``ceil(len / 4)`` tokens, punctuation included), which stays under either figure; the
  count of truncated texts is kept in :attr:`TitanImageEmbedder.truncated_texts`.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from botocore.exceptions import BotoCoreError, ClientError

from core.embeddings import embed_concurrently
from core.images import ImageFormat, encode_image

if TYPE_CHECKING:
    from core.config import AwsConfig, EmbeddingConfig

log = logging.getLogger(__name__)

TITAN_MODEL_ID = "amazon.titan-embed-image-v1"
TITAN_OUTPUT_LENGTHS = (256, 384, 1024)
TITAN_MAX_IMAGE_SIDE_PX = 2048
"""Largest input resolution, 2,048 x 2,048 px (Bedrock user guide, Titan Multimodal Embeddings G1 model page)."""
TITAN_MAX_IMAGE_B64_BYTES = 5 * 1024 * 1024
"""Plan for images of at most 5 MB (DESIGN §5); applied to the base64 string sent in ``inputImage``."""
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
TITAN_MAX_TEXT_TOKENS = 128
"""Conservative text budget: G1 has been documented with 128 input tokens (the current page lists 256)."""


class TitanEmbeddingError(RuntimeError):
    """Bedrock refused or answered an embedding request unusably; the message names the input and the cause."""


def estimate_tokens(text: str) -> int:
    """A conservative token count for ``text``: each whitespace-separated word counts ``ceil(len / 4)``."""
    return sum(max(1, math.ceil(len(word) / 4)) for word in text.split())


def truncate_for_titan(text: str, max_tokens: int = TITAN_MAX_TEXT_TOKENS) -> tuple[str, bool]:
    """Cut ``text`` after the last whole word that keeps :func:`estimate_tokens` within ``max_tokens``.

    Whitespace runs are collapsed to single spaces. Returns ``(text, truncated)``.
    """
    words = text.split()
    kept: list[str] = []
    used = 0
    for word in words:
        cost = max(1, math.ceil(len(word) / 4))
        if used + cost > max_tokens:
            break
        kept.append(word)
        used += cost
    return " ".join(kept), len(kept) < len(words)


class TitanImageEmbedder:
    """Titan Multimodal Embeddings G1 through ``bedrock-runtime`` ``invoke_model``.

    Images and texts share one space, so this embedder also scores prompt fidelity (DESIGN §7).
    Requests run in a thread pool of ``concurrency`` workers; throttling is retried by botocore's
    adaptive retry mode (the client comes from :func:`core.aws.make_client`). Rows come back
    L2-normalised, in input order.

    Args:
        client: a ``bedrock-runtime`` client (``invoke_model``).
        model_id: the Titan model ID (default ``amazon.titan-embed-image-v1``).
        output_length: 256, 384 or 1024: the embedding dimension D.
        concurrency: parallel requests (1..64).
        image_format: ``"jpeg"`` (quality ``jpeg_quality``) or ``"png"`` (lossless, larger).

    Raises:
        ValueError: an output length Titan does not offer, or concurrency below 1.
    """

    def __init__(self, client: Any, model_id: str = TITAN_MODEL_ID, output_length: int = 1024,
                 concurrency: int = 4, image_format: ImageFormat = "jpeg", jpeg_quality: int = 95) -> None:
        if output_length not in TITAN_OUTPUT_LENGTHS:
            raise ValueError(f"Titan outputEmbeddingLength must be one of {TITAN_OUTPUT_LENGTHS}, got {output_length}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if image_format not in ("jpeg", "png"):
            raise ValueError(f"image_format must be 'jpeg' or 'png', got {image_format!r}")
        self.client = client
        self.model_id = model_id
        self.dimension = int(output_length)
        self.concurrency = int(concurrency)
        self.image_format: ImageFormat = image_format
        self.jpeg_quality = int(jpeg_quality)
        self.name = f"bedrock-{model_id}-{self.dimension}"
        self.truncated_texts = 0
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: EmbeddingConfig, aws: AwsConfig | None = None,
                    client: Any = None) -> TitanImageEmbedder:
        """Build from ``embeddings`` and ``aws`` settings; ``client`` overrides the ``bedrock-runtime`` client."""
        if client is None:
            from core.aws import client_from_config

            client = client_from_config("bedrock-runtime", aws)
        return cls(client, model_id=config.titan_model_id, output_length=config.titan_output_length,
                   concurrency=config.concurrency)

    # -- request bodies ---------------------------------------------------------------------------

    def image_body(self, image: np.ndarray, what: str = "image") -> dict[str, Any]:
        """The request body for one ``(H, W, 3)`` uint8 RGB image (downscaled and re-encoded to fit)."""
        # base64 grows 3 bytes to 4 characters: keep the raw bytes under 3/4 of the limit.
        encoded = encode_image(image, max_bytes=TITAN_MAX_IMAGE_B64_BYTES * 3 // 4, image_format=self.image_format,
                               max_side=TITAN_MAX_IMAGE_SIDE_PX, jpeg_quality=self.jpeg_quality, what=what)
        body = {"inputImage": base64.b64encode(encoded.data).decode("ascii"),
                "embeddingConfig": {"outputEmbeddingLength": self.dimension}}
        self.validate_body(body)
        return body

    def text_body(self, text: str, what: str = "text") -> dict[str, Any]:
        """The request body for one text, cut to :data:`TITAN_MAX_TEXT_TOKENS` estimated tokens."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{what} must be a non-empty string, got {text!r}")
        cut, truncated = truncate_for_titan(text)
        if truncated:
            with self._lock:
                self.truncated_texts += 1
            log.warning("%s truncated to about %d tokens for Titan: %r", what, TITAN_MAX_TEXT_TOKENS, cut)
        body = {"inputText": cut, "embeddingConfig": {"outputEmbeddingLength": self.dimension}}
        self.validate_body(body)
        return body

    @staticmethod
    def validate_body(body: dict[str, Any]) -> None:
        """Check a body against the documented shape: exactly one of ``inputImage``/``inputText``.

        Raises:
            ValueError: unknown keys, both or neither input, an empty or over-long input, or an
                ``outputEmbeddingLength`` Titan does not offer.
        """
        unknown = set(body) - {"inputImage", "inputText", "embeddingConfig"}
        if unknown:
            raise ValueError(f"Titan request body has unknown keys {sorted(unknown)}")
        if ("inputImage" in body) == ("inputText" in body):
            raise ValueError("Titan request body needs exactly one of inputImage and inputText "
                             "(both together return their average embedding)")
        if "inputImage" in body:
            data = body["inputImage"]
            if not isinstance(data, str) or not data or len(data) > TITAN_MAX_IMAGE_B64_BYTES:
                raise ValueError(f"inputImage must be a base64 string of 1..{TITAN_MAX_IMAGE_B64_BYTES} characters")
            if len(data) % 4 or not _BASE64.fullmatch(data):
                raise ValueError("inputImage is not standard base64")
        else:
            text = body["inputText"]
            if not isinstance(text, str) or not text.strip():
                raise ValueError("inputText must be a non-empty string")
            if estimate_tokens(text) > TITAN_MAX_TEXT_TOKENS:
                raise ValueError(f"inputText exceeds about {TITAN_MAX_TEXT_TOKENS} tokens; use truncate_for_titan")
        length = body.get("embeddingConfig", {}).get("outputEmbeddingLength")
        if length not in TITAN_OUTPUT_LENGTHS:
            raise ValueError(f"embeddingConfig.outputEmbeddingLength must be one of {TITAN_OUTPUT_LENGTHS}, "
                             f"got {length!r}")

    # -- calls --------------------------------------------------------------------------------------

    def _invoke(self, body: dict[str, Any], what: str) -> np.ndarray:
        try:
            response = self.client.invoke_model(modelId=self.model_id, body=json.dumps(body),
                                                contentType="application/json", accept="application/json")
            payload = json.loads(response["body"].read())
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "ClientError")
            raise TitanEmbeddingError(f"Bedrock invoke_model on {self.model_id} failed for {what}: {code}: "
                                      f"{err.response.get('Error', {}).get('Message', '')}") from err
        except (BotoCoreError, ValueError) as err:
            raise TitanEmbeddingError(f"Bedrock invoke_model on {self.model_id} failed for {what}: {err}") from err
        embedding = payload.get("embedding") if isinstance(payload, dict) else None
        if not isinstance(embedding, list) or len(embedding) != self.dimension:
            got = len(embedding) if isinstance(embedding, list) else type(embedding).__name__
            message = payload.get("message") if isinstance(payload, dict) else None
            raise TitanEmbeddingError(f"Titan answered {what} without a {self.dimension}-long embedding "
                                      f"(got {got}; message: {message!r})")
        vector = np.asarray(embedding, dtype=np.float32)
        if not np.all(np.isfinite(vector)):
            raise TitanEmbeddingError(f"Titan returned a non-finite embedding for {what}")
        return vector

    def _run(self, jobs: list[tuple[dict[str, Any], str]]) -> np.ndarray:
        return embed_concurrently(jobs, self._invoke, self.dimension, self.concurrency)

    def embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Embed ``images`` (each ``(H, W, 3)`` uint8 RGB) into an ``(N, D)`` float32 array of unit rows.

        Every image is encoded before the first request, so a bad image fails fast.

        Raises:
            core.errors.InputError: an image is not ``(H, W, 3)`` uint8.
            TitanEmbeddingError: Bedrock refused a request (after botocore's retries) or answered
                without an embedding of length D.
        """
        jobs = [(self.image_body(img, what=f"image {i}"), f"image {i}") for i, img in enumerate(images)]
        return self._run(jobs)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` into an ``(N, D)`` float32 array of unit rows (texts cut to about 128 tokens).

        Raises:
            ValueError: an empty text.
            TitanEmbeddingError: as for :meth:`embed_images`.
        """
        jobs = [(self.text_body(t, what=f"text {i}"), f"text {i}") for i, t in enumerate(texts)]
        return self._run(jobs)
