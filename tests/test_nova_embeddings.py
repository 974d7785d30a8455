"""NovaImageEmbedder (Amazon Nova Multimodal Embeddings) against a boto3 bedrock-runtime client stubbed by
botocore's Stubber: every invoke_model request is validated against the service model, and its body is
compared byte for byte with the documented request shape."""

from __future__ import annotations

import base64
import io
import json

import boto3
import cv2
import numpy as np
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from core.config import ConfigError, EmbeddingConfig, parse_config
from core.embedders import make_embedder
from core.embeddings import ImageEmbedder, TextImageEmbedder
from core.errors import InputError
from core.nova_embeddings import NovaEmbeddingError, NovaImageEmbedder

MODEL = "amazon.nova-2-multimodal-embeddings-v1:0"


@pytest.fixture
def bedrock(aws_env):
    client = boto3.client("bedrock-runtime", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def response(vector, kind: str = "IMAGE") -> dict:
    data = json.dumps({"embeddings": [{"embeddingType": kind, "embedding": [float(v) for v in vector]}]}).encode()
    return {"body": StreamingBody(io.BytesIO(data), len(data)), "contentType": "application/json"}


def image(seed: int, size=(40, 30)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)


def png_b64(img: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    assert ok
    return base64.b64encode(buf.tobytes()).decode("ascii")


def documented_body(img: np.ndarray, dimension: int) -> str:
    """The request body exactly as the Nova user guide documents it, for a small PNG image."""
    return json.dumps({"schemaVersion": "nova-multimodal-embed-v1", "taskType": "SINGLE_EMBEDDING",
                       "singleEmbeddingParams": {"embeddingPurpose": "GENERIC_INDEX", "embeddingDimension": dimension,
                                                 "image": {"format": "png", "detailLevel": "STANDARD_IMAGE",
                                                           "source": {"bytes": png_b64(img)}}}})


def expected(img: np.ndarray, dimension: int) -> dict:
    return {"modelId": MODEL, "body": documented_body(img, dimension), "contentType": "application/json",
            "accept": "application/json"}


def test_requests_follow_the_documented_shape_and_rows_come_back_normalised_in_order(bedrock):
    client, stubber = bedrock
    images = [image(0), image(1)]
    vectors = np.random.default_rng(2).normal(size=(2, 384)) * 5.0
    for img, vec in zip(images, vectors, strict=True):
        stubber.add_response("invoke_model", response(vec), expected(img, 384))
    embedder = NovaImageEmbedder(client, dimension=384, concurrency=1)
    assert isinstance(embedder, ImageEmbedder) and not isinstance(embedder, TextImageEmbedder)
    rows = embedder.embed_images(images)
    assert rows.shape == (2, 384) and rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(rows, vectors / np.linalg.norm(vectors, axis=1, keepdims=True), atol=1e-6)
    assert embedder.name == f"bedrock-{MODEL}-384"


def test_dimension_mismatch_in_the_answer_is_an_error(bedrock):
    client, stubber = bedrock
    img = image(3)
    stubber.add_response("invoke_model", response(np.ones(256)), expected(img, 1024))
    with pytest.raises(NovaEmbeddingError, match=r"length 256, requested embeddingDimension 1024 "
                                                 r"\(embeddings.nova_dimension\)"):
        NovaImageEmbedder(client, concurrency=1).embed_images([img])


def test_answer_without_an_image_embedding_and_refusals_are_errors(bedrock):
    client, stubber = bedrock
    img = image(4)
    stubber.add_response("invoke_model", response(np.ones(1024), kind="TEXT"), expected(img, 1024))
    embedder = NovaImageEmbedder(client, concurrency=1)
    with pytest.raises(NovaEmbeddingError, match="embeddingType 'TEXT', expected IMAGE"):
        embedder.embed_images([img])
    stubber.add_client_error("invoke_model", "ValidationException", "Malformed input request",
                             http_status_code=400, expected_params=expected(img, 1024))
    with pytest.raises(NovaEmbeddingError, match="ValidationException: Malformed input request"):
        embedder.embed_images([img])
    with pytest.raises(NovaEmbeddingError, match="without an embeddings list"):
        embedder.parse_response({"embedding": [0.0] * 1024})


def test_bad_image_fails_before_any_request(bedrock):
    client, _ = bedrock  # nothing queued: a request would raise
    with pytest.raises(InputError, match="image 1 must be uint8"):
        NovaImageEmbedder(client).embed_images([image(5), np.zeros((8, 8, 3), dtype=np.float32)])
    assert NovaImageEmbedder(client).embed_images([]).shape == (0, 1024)


def test_large_image_is_downscaled_to_2048_px():
    embedder = NovaImageEmbedder(client=object())
    body = embedder.image_body(image(6, size=(3000, 1500)))
    data = base64.b64decode(body["singleEmbeddingParams"]["image"]["source"]["bytes"])
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape[:2] == (1024, 2048)


@pytest.mark.parametrize("settings, message", [
    ({"embeddings": {"backend": "nova", "nova_dimension": 512}}, "embeddings.nova_dimension"),
    ({"embeddings": {"backend": "nova"}, "aws": {"region": "eu-west-1"}}, "offered in us-east-1 only"),
    ({"embeddings": {"backend": "nova", "nova_embedding_purpose": "TEXT_RETRIEVAL"}},
     "embeddings.nova_embedding_purpose"),
])
def test_bad_configuration_is_refused_with_the_key(settings, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(settings)
    with pytest.raises(ValueError, match=r"one of \(256, 384, 1024, 3072\)"):
        NovaImageEmbedder(client=object(), dimension=512)


def test_backend_is_registered_with_botocore_retries_on_the_client(aws_env):
    config = EmbeddingConfig(backend="nova", nova_dimension=3072, concurrency=2)
    embedder = make_embedder(config)
    assert isinstance(embedder, NovaImageEmbedder)
    assert (embedder.model_id, embedder.dimension, embedder.concurrency) == (MODEL, 3072, 2)
    retries = embedder.client.meta.config.retries
    assert retries["mode"] == "adaptive" and retries["total_max_attempts"] == 9  # aws.max_attempts 8 retries + 1
    assert embedder.client.meta.region_name == "us-east-1"
