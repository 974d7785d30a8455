"""TitanImageEmbedder against a real boto3 bedrock-runtime client stubbed by botocore's Stubber."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import boto3
import cv2
import numpy as np
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from core.embeddings import TextImageEmbedder
from core.errors import InputError
from core.titan_embeddings import (
    TITAN_MAX_IMAGE_B64_BYTES,
    TitanEmbeddingError,
    TitanImageEmbedder,
    estimate_tokens,
    truncate_for_titan,
)


@pytest.fixture
def bedrock(aws_env):
    client = boto3.client("bedrock-runtime", region_name="us-east-1")
    sent: list[dict] = []
    client.meta.events.register("before-parameter-build.bedrock-runtime.InvokeModel",
                                lambda params, **_: sent.append(json.loads(params["body"])))
    with Stubber(client) as stubber:
        yield client, stubber, sent
        stubber.assert_no_pending_responses()


def _response(vector) -> dict:
    data = json.dumps({"embedding": [float(v) for v in vector], "inputTextTokenCount": 0, "message": None}).encode()
    return {"body": StreamingBody(io.BytesIO(data), len(data)), "contentType": "application/json"}


EXPECTED = {"modelId": "amazon.titan-embed-image-v1", "body": ANY,
            "contentType": "application/json", "accept": "application/json"}


def _decode(b64: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR),
                        cv2.COLOR_BGR2RGB)


def test_images_are_embedded_alone_normalised_and_in_order(bedrock):
    client, stubber, sent = bedrock
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(2, 256)) * 7.0
    for v in vectors:
        stubber.add_response("invoke_model", _response(v), EXPECTED)
    embedder = TitanImageEmbedder(client, output_length=256, concurrency=1)
    assert isinstance(embedder, TextImageEmbedder)
    red = np.zeros((60, 90, 3), np.uint8)
    red[..., 0] = 220
    blue = np.zeros((40, 30, 3), np.uint8)
    blue[..., 2] = 200
    rows = embedder.embed_images([red, blue])
    assert rows.shape == (2, 256) and rows.dtype == np.float32
    np.testing.assert_allclose(rows, vectors / np.linalg.norm(vectors, axis=1, keepdims=True), atol=1e-6)
    assert len(sent) == 2
    for body, image in zip(sent, [red, blue], strict=True):
        assert set(body) == {"inputImage", "embeddingConfig"}  # no inputText: image alone, not an average
        assert body["embeddingConfig"] == {"outputEmbeddingLength": 256}
        decoded = _decode(body["inputImage"])
        assert decoded.shape == image.shape
        assert np.abs(decoded.astype(int) - image.astype(int)).mean() < 3.0


def test_large_image_is_downscaled_below_limits(bedrock):
    client, stubber, sent = bedrock
    stubber.add_response("invoke_model", _response(np.ones(1024)), EXPECTED)
    noise = np.random.default_rng(1).integers(0, 256, size=(2600, 3000, 3), dtype=np.uint8)
    TitanImageEmbedder(client, concurrency=1).embed_images([noise])
    b64 = sent[0]["inputImage"]
    assert len(b64) <= TITAN_MAX_IMAGE_B64_BYTES
    decoded = _decode(b64)
    assert max(decoded.shape[:2]) <= 2048
    assert decoded.shape[1] / decoded.shape[0] == pytest.approx(3000 / 2600, rel=0.01)


def test_texts_are_truncated_on_word_boundaries(bedrock):
    client, stubber, sent = bedrock
    for _ in range(2):
        stubber.add_response("invoke_model", _response(np.arange(1, 385)), EXPECTED)
    embedder = TitanImageEmbedder(client, output_length=384, concurrency=1)
    long_text = " ".join(f"storyboard{i}" for i in range(200))
    rows = embedder.embed_texts(["Bunny picks a flower in the meadow", long_text])
    assert rows.shape == (2, 384)
    assert sent[0] == {"inputText": "Bunny picks a flower in the meadow",
                       "embeddingConfig": {"outputEmbeddingLength": 384}}
    cut = sent[1]["inputText"]
    assert long_text.startswith(cut) and long_text[len(cut)] == " "
    assert estimate_tokens(cut) <= 128 < estimate_tokens(long_text)
    assert embedder.truncated_texts == 1


def test_truncate_for_titan_keeps_short_text():
    assert truncate_for_titan("  a  short\nprompt ") == ("a short prompt", False)
    text, cut = truncate_for_titan("word " * 500, max_tokens=10)
    assert cut and text == " ".join(["word"] * 10)


def test_service_errors_name_the_input(bedrock):
    client, stubber, _ = bedrock
    stubber.add_response("invoke_model", _response(np.ones(1024)), EXPECTED)
    stubber.add_client_error("invoke_model", service_error_code="ValidationException",
                             service_message="Unable to process the image", http_status_code=400)
    embedder = TitanImageEmbedder(client, concurrency=1)
    img = np.full((32, 32, 3), 100, np.uint8)
    with pytest.raises(TitanEmbeddingError, match="image 1: ValidationException"):
        embedder.embed_images([img, img])


def test_wrong_length_embedding_is_an_error(bedrock):
    client, stubber, _ = bedrock
    stubber.add_response("invoke_model", _response(np.ones(256)), EXPECTED)
    with pytest.raises(TitanEmbeddingError, match="1024-long"):
        TitanImageEmbedder(client, concurrency=1).embed_images([np.zeros((16, 16, 3), np.uint8)])


def test_bad_inputs_fail_before_any_request(bedrock):
    client, _, sent = bedrock
    embedder = TitanImageEmbedder(client, concurrency=1)
    with pytest.raises(InputError, match="image 1"):
        embedder.embed_images([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)])
    with pytest.raises(ValueError, match="non-empty"):
        embedder.embed_texts(["ok", "   "])
    assert sent == []
    with pytest.raises(ValueError, match="exactly one"):
        TitanImageEmbedder.validate_body({"inputText": "a", "inputImage": "AAAA",
                                          "embeddingConfig": {"outputEmbeddingLength": 256}})
    with pytest.raises(ValueError, match="outputEmbeddingLength"):
        TitanImageEmbedder.validate_body({"inputText": "a", "embeddingConfig": {"outputEmbeddingLength": 512}})
    with pytest.raises(ValueError, match="one of"):
        TitanImageEmbedder(client, output_length=512)


class _EchoClient:
    """Thread-safe fake: the embedding encodes the image's mean colour; answers arrive out of order."""

    def __init__(self) -> None:
        self.calls = 0
        self.threads: set[int] = set()
        self._lock = threading.Lock()

    def invoke_model(self, modelId, body, contentType, accept):  # noqa: N803 - boto3 parameter names
        request = json.loads(body)
        image = _decode(request["inputImage"])
        with self._lock:
            self.calls += 1
            self.threads.add(threading.get_ident())
        time.sleep(0.002 * (int(image[0, 0, 0]) % 5))
        vec = np.zeros(256)
        vec[:3] = image.reshape(-1, 3).mean(axis=0) + 1.0
        data = json.dumps({"embedding": vec.tolist()}).encode()
        return {"body": io.BytesIO(data)}


def test_concurrent_requests_keep_input_order():
    client = _EchoClient()
    embedder = TitanImageEmbedder(client, output_length=256, concurrency=4)
    colours = [(i * 20 % 256, 255 - i * 9, (i * 37) % 256) for i in range(12)]
    images = [np.full((24, 24, 3), c, np.uint8) for c in colours]
    rows = embedder.embed_images(images)
    assert client.calls == 12 and len(client.threads) > 1
    expected = np.array([[c[0] + 1, c[1] + 1, c[2] + 1] for c in colours], float)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(rows[:, :3], expected, atol=0.02)


def test_make_embedder_builds_titan_from_config(bedrock):
    from core.config import AwsConfig, EmbeddingConfig
    from core.embedders import make_embedder

    client, stubber, sent = bedrock
    stubber.add_response("invoke_model", _response(np.ones(384)), EXPECTED)
    embedder = make_embedder(EmbeddingConfig(backend="titan", titan_output_length=384, concurrency=1),
                             AwsConfig(), client=client)
    assert isinstance(embedder, TitanImageEmbedder)
    assert embedder.dimension == 384 and embedder.name == "bedrock-amazon.titan-embed-image-v1-384"
    assert embedder.embed_images([np.zeros((20, 20, 3), np.uint8)]).shape == (1, 384)
    assert sent[0]["embeddingConfig"] == {"outputEmbeddingLength": 384}


def test_from_config_builds_its_own_client(aws_env):
    from core.config import AwsConfig, EmbeddingConfig

    embedder = TitanImageEmbedder.from_config(EmbeddingConfig(backend="titan"), AwsConfig(region="us-west-2"))
    assert embedder.client.meta.region_name == "us-west-2"
    assert embedder.client.meta.config.retries["mode"] == "adaptive"
