"""Amazon Nova Multimodal Embeddings on Bedrock as an :class:`core.embeddings.ImageEmbedder`.

Request and response (Amazon Nova user guide, "Complete embeddings request and response schema",
synchronous ``InvokeModel`` on ``amazon.nova-2-multimodal-embeddings-v1:0``, offered in us-east-1):

- request body ``{"schemaVersion": "nova-multimodal-embed-v1", "taskType": "SINGLE_EMBEDDING",
  "singleEmbeddingParams": {"embeddingPurpose": "GENERIC_INDEX", "embeddingDimension": 256|384|1024|3072,
  "image": {"format": "png"|"jpeg", "detailLevel": "STANDARD_IMAGE", "source": {"bytes": <base64>}}}}``;
- response body ``{"embeddings": [{"embeddingType": "IMAGE", "embedding": [float, ...]}]}``.

Images only: this backend de-duplicates crops and compares generated images with references; it does not
implement ``embed_texts`` (prompt fidelity stays with Titan), since a text compared with images would need a
retrieval ``embeddingPurpose`` rather than ``GENERIC_INDEX``.

Limits respected here: the ``InvokeModel`` body is at most 25,000,000 bytes (botocore ``bedrock-runtime``
service model, ``InvokeModel.body`` ``max``); base64 turns 3 bytes into 4 characters, so the encoded image is
kept under :data:`NOVA_MAX_IMAGE_BYTES`. Crops are downscaled to a longer side of at most 2,048 px
(:data:`NOVA_MAX_IMAGE_SIDE_PX`, the project's choice, as for Titan: more pixels only cost bandwidth).

Throttling and transient errors are retried by botocore's ``adaptive`` retry mode on the client
(:func:`core.aws.client_from_config`), not by a loop here.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from botocore.exceptions import BotoCoreError, ClientError

from core.embeddings import embed_concurrently
from core.images import ImageFormat, encode_image

if TYPE_CHECKING:
    from core.config import AwsConfig, EmbeddingConfig

NOVA_EMBEDDINGS_MODEL_ID = "amazon.nova-2-multimodal-embeddings-v1:0"
NOVA_SCHEMA_VERSION = "nova-multimodal-embed-v1"
NOVA_DIMENSIONS = (256, 384, 1024, 3072)
NOVA_PURPOSES = ("GENERIC_INDEX", "CLASSIFICATION", "CLUSTERING")
"""``embeddingPurpose`` values that suit image-to-image comparison (the schema lists retrieval ones too)."""
INVOKE_MODEL_MAX_BODY_BYTES = 25_000_000
"""``InvokeModel`` ``body`` maximum (botocore ``bedrock-runtime`` service model)."""
NOVA_MAX_IMAGE_BYTES = (INVOKE_MODEL_MAX_BODY_BYTES - 4096) * 3 // 4
"""Largest encoded image: base64 of it plus the JSON around it stays within the body limit."""
NOVA_MAX_IMAGE_SIDE_PX = 2048


class NovaEmbeddingError(RuntimeError):
    """Bedrock refused or answered an embedding request unusably; the message names the image and the cause."""


class NovaImageEmbedder:
    """Nova Multimodal Embeddings through ``bedrock-runtime`` ``invoke_model``; rows L2-normalised, in input order.

    Args:
        client: a ``bedrock-runtime`` client (``invoke_model``).
        model_id: default ``amazon.nova-2-multimodal-embeddings-v1:0``.
        dimension: ``embeddingDimension``: 256, 384, 1024 or 3072 (the embedding length D).
        purpose: ``embeddingPurpose``, one of :data:`NOVA_PURPOSES` (default ``GENERIC_INDEX``).
        concurrency: parallel requests (1..64).
        image_format: ``"png"`` (lossless, the default) or ``"jpeg"``.

    Raises:
        ValueError: a dimension or purpose Nova does not offer, concurrency below 1, an unknown format.
    """

    def __init__(self, client: Any, model_id: str = NOVA_EMBEDDINGS_MODEL_ID, dimension: int = 1024,
                 purpose: str = "GENERIC_INDEX", concurrency: int = 4, image_format: ImageFormat = "png") -> None:
        if dimension not in NOVA_DIMENSIONS:
            raise ValueError(f"Nova embeddingDimension must be one of {NOVA_DIMENSIONS}, got {dimension} "
                             f"(embeddings.nova_dimension)")
        if purpose not in NOVA_PURPOSES:
            raise ValueError(f"embeddingPurpose must be one of {NOVA_PURPOSES} for image comparison, got {purpose!r}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if image_format not in ("png", "jpeg"):
            raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
        self.client = client
        self.model_id = model_id
        self.dimension = int(dimension)
        self.purpose = purpose
        self.concurrency = int(concurrency)
        self.image_format: ImageFormat = image_format
        self.name = f"bedrock-{model_id}-{self.dimension}"

    @classmethod
    def from_config(cls, config: EmbeddingConfig, aws: AwsConfig | None = None,
                    client: Any = None) -> NovaImageEmbedder:
        """Build from the ``embeddings`` and ``aws`` settings; ``client`` overrides the ``bedrock-runtime`` client
        (default: :func:`core.aws.client_from_config`, botocore adaptive retries)."""
        if client is None:
            from core.aws import client_from_config

            client = client_from_config("bedrock-runtime", aws)
        return cls(client, model_id=config.nova_model_id, dimension=config.nova_dimension,
                   purpose=config.nova_embedding_purpose, concurrency=config.concurrency)

    def image_body(self, image: np.ndarray, what: str = "image") -> dict[str, Any]:
        """The request body for one ``(H, W, 3)`` uint8 RGB image (downscaled and re-encoded to fit).

        Raises:
            core.errors.InputError: ``image`` is not an RGB uint8 array.
        """
        encoded = encode_image(image, max_bytes=NOVA_MAX_IMAGE_BYTES, image_format=self.image_format,
                               max_side=NOVA_MAX_IMAGE_SIDE_PX, jpeg_quality=95, what=what)
        return {
            "schemaVersion": NOVA_SCHEMA_VERSION,
            "taskType": "SINGLE_EMBEDDING",
            "singleEmbeddingParams": {
                "embeddingPurpose": self.purpose,
                "embeddingDimension": self.dimension,
                "image": {"format": encoded.image_format, "detailLevel": "STANDARD_IMAGE",
                          "source": {"bytes": base64.b64encode(encoded.data).decode("ascii")}},
            },
        }

    def parse_response(self, payload: Any, what: str = "image") -> np.ndarray:
        """The ``(D,)`` float32 vector in a response body.

        Raises:
            NovaEmbeddingError: no ``embeddings[0].embedding`` list, a length other than D (a dimension
                mismatch), a type other than ``IMAGE``, or non-finite values.
        """
        items = payload.get("embeddings") if isinstance(payload, dict) else None
        if not isinstance(items, list) or not items or not isinstance(items[0], dict):
            keys = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
            raise NovaEmbeddingError(f"Nova answered {what} without an embeddings list (got {keys})")
        item = items[0]
        kind = item.get("embeddingType")
        if kind not in (None, "IMAGE"):
            raise NovaEmbeddingError(f"Nova answered {what} with embeddingType {kind!r}, expected IMAGE")
        embedding = item.get("embedding")
        if not isinstance(embedding, list) or len(embedding) != self.dimension:
            got = len(embedding) if isinstance(embedding, list) else type(embedding).__name__
            raise NovaEmbeddingError(f"Nova answered {what} with an embedding of length {got}, requested "
                                     f"embeddingDimension {self.dimension} (embeddings.nova_dimension)")
        vector = np.asarray(embedding, dtype=np.float32)
        if not np.all(np.isfinite(vector)):
            raise NovaEmbeddingError(f"Nova returned a non-finite embedding for {what}")
        return vector

    def _invoke(self, body: dict[str, Any], what: str) -> np.ndarray:
        try:
            response = self.client.invoke_model(modelId=self.model_id, body=json.dumps(body),
                                                contentType="application/json", accept="application/json")
            payload = json.loads(response["body"].read())
        except ClientError as err:
            error = err.response.get("Error", {})
            raise NovaEmbeddingError(f"Bedrock invoke_model on {self.model_id} failed for {what}: "
                                     f"{error.get('Code', 'ClientError')}: {error.get('Message', '')}") from err
        except (BotoCoreError, ValueError) as err:
            raise NovaEmbeddingError(f"Bedrock invoke_model on {self.model_id} failed for {what}: {err}") from err
        return self.parse_response(payload, what)

    def embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Embed ``images`` (each ``(H, W, 3)`` uint8 RGB) into an ``(N, D)`` float32 array of unit rows.

        Every image is encoded before the first request, so a bad image fails before any cost.

        Raises:
            core.errors.InputError: an image is not ``(H, W, 3)`` uint8.
            NovaEmbeddingError: Bedrock refused a request (after botocore's retries) or answered unusably.
        """
        jobs = [(self.image_body(img, what=f"image {i}"), f"image {i}") for i, img in enumerate(images)]
        return embed_concurrently(jobs, self._invoke, self.dimension, self.concurrency)
