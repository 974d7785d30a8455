"""Storyboard image generation: configuration limits, the prompt set, Nova Canvas through a Stubber-checked
bedrock-runtime client (every request validated against botocore's service model and against the
TEXT_IMAGE limits of DESIGN §5), blocked prompts and outputs, throttling, and the folder generator."""

from __future__ import annotations

import base64
import io
import json

import boto3
import numpy as np
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber
from PIL import Image
from throttling_endpoint import client_for, throttling_endpoint

from core.config import AwsConfig, CharacterConfig, ConfigError, parse_config
from core.errors import InputError
from core.evaluation_config import DEFAULT_PROMPT_TEMPLATES, EvaluationConfig
from evaluation.generation import GENERATION_LOG, generate_prompt_set, read_generation_log
from evaluation.generators import FolderImageGenerator, GenerationError, ImageGenerator
from evaluation.nova_canvas import NovaCanvasGenerator
from evaluation.prompt_set import (
    RequestValidationError,
    TextImageRequest,
    build_requests,
    image_file_name,
    parse_image_name,
    validate_text_image_body,
)

BASE_MODEL = "amazon.nova-canvas-v1:0"
CUSTOM_MODEL = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abcdef123456"




@pytest.fixture
def bedrock(aws_env):
    """A real bedrock-runtime client under a Stubber; ``sent`` collects each request body (parsed), and every
    body is checked against the TEXT_IMAGE limits as it is sent."""
    client = boto3.client("bedrock-runtime", region_name="us-east-1")
    sent: list[dict] = []

    def capture(params, **_):
        body = json.loads(params["body"])
        validate_text_image_body(body)
        sent.append(body)

    client.meta.events.register("before-parameter-build.bedrock-runtime.InvokeModel", capture)
    with Stubber(client) as stubber:
        yield client, stubber, sent
        stubber.assert_no_pending_responses()


def _png(colour: tuple[int, int, int], size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _answer(images: list[bytes], error: str | None = None) -> dict:
    payload: dict = {"images": [base64.b64encode(i).decode() for i in images]}
    if error is not None:
        payload["error"] = error
    data = json.dumps(payload).encode()
    return {"body": StreamingBody(io.BytesIO(data), len(data)), "contentType": "application/json"}


def _expected(model_id: str) -> dict:
    return {"modelId": model_id, "body": ANY, "contentType": "application/json", "accept": "application/json"}


def _request(**overrides) -> TextImageRequest:
    fields = {"character": "bunny", "prompt_index": 0, "prompt": "Bunny waves hello in a meadow.", "seed": 42,
              "number_of_images": 3, "negative_prompt": "blurry", "width": 1024, "height": 1024,
              "cfg_scale": 8.0, "quality": "premium"}
    fields.update(overrides)
    return TextImageRequest(**fields)


# --- configuration -------------------------------------------------------------------------------------


def test_default_config_is_the_blog_prompt_set():
    config = EvaluationConfig()
    assert config.prompt_templates == list(DEFAULT_PROMPT_TEMPLATES) and len(config.prompt_templates) == 3
    assert (config.width, config.height, config.cfg_scale, config.quality) == (1024, 1024, 8.0, "premium")
    assert "blurry" in config.negative_prompt


@pytest.mark.parametrize("settings, key", [
    ({"width": 1000}, "divisible by 16"),
    ({"width": 2048, "height": 2048}, "fewer than 4194304"),
    ({"width": 1600, "height": 320}, "aspect ratio"),
    ({"width": 304}, "evaluation.width"),
    ({"images_per_prompt": 6}, "evaluation.images_per_prompt"),
    ({"cfg_scale": 10.5}, "evaluation.cfg_scale"),
    ({"cfg_scale": 1.0}, "evaluation.cfg_scale"),
    ({"seeds": [858_993_460]}, "evaluation.seeds.0"),
    ({"seeds": [1, 1]}, "unique"),
    ({"quality": "ultra"}, "evaluation.quality"),
    ({"negative_prompt": "x" * 1025}, "evaluation.negative_prompt"),
    ({"negative_prompt": ""}, "evaluation.negative_prompt"),
    ({"prompt_templates": ["{name} rides a {vehicle}"]}, "unknown field"),
    ({"prompt_templates": ["{name"]}, "not a valid format string"),
    ({"prompts": {"bunny": []}}, "is empty"),
    ({"bootstrap_samples": 10}, "evaluation.bootstrap_samples"),
    ({"colour": "red"}, "unknown key"),
])
def test_config_rejects_values_outside_the_nova_canvas_limits(settings, key):
    with pytest.raises(ConfigError) as err:
        parse_config({"evaluation": settings})
    assert key in str(err.value)


def test_config_accepts_the_limits_themselves():
    config = parse_config({"evaluation": {"width": 1280, "height": 320, "cfg_scale": 10.0, "images_per_prompt": 5,
                                          "seeds": [0, 858_993_459]}}).evaluation
    assert (config.width, config.height) == (1280, 320)  # 4:1 exactly


# --- prompt set ------------------------------------------------------------------------------------------


def test_build_requests_renders_every_character_prompt_and_seed():
    config = EvaluationConfig(seeds=[3, 5], images_per_prompt=2, prompts={"sintel": ["Sintel climbs a tower."]})
    characters = [CharacterConfig(name="bunny", display_name="Big Buck Bunny"), CharacterConfig(name="sintel")]
    requests = build_requests(config, characters)
    assert len(requests) == 3 * 2 + 1 * 2
    bunny = [r for r in requests if r.character == "bunny"]
    assert all("Big Buck Bunny" in r.prompt and "{" not in r.prompt for r in bunny)
    assert [r.prompt for r in requests if r.character == "sintel"] == ["Sintel climbs a tower."] * 2
    assert [r.ordinal for r in requests] == list(range(len(requests)))
    for r in requests:
        body = r.body()
        assert body["imageGenerationConfig"]["seed"] in (3, 5)
        assert body["textToImageParams"]["negativeText"] == config.negative_prompt
    assert bunny[1].file_names() == ["bunny_p0_s5_0.png", "bunny_p0_s5_1.png"]


def test_build_requests_rejects_a_prompt_over_1024_characters():
    config = EvaluationConfig(prompt_templates=["{name} " + "walks on. " * 100])
    with pytest.raises(InputError, match="1,024|1024"):
        build_requests(config, [CharacterConfig(name="bunny", display_name="B" * 64)])


def test_build_requests_needs_a_character():
    with pytest.raises(InputError, match="characters"):
        build_requests(EvaluationConfig(), [])


def test_image_names_round_trip():
    name = image_file_name("big_bunny-2", 4, 858_993_459, 1)
    assert name == "big_bunny-2_p4_s858993459_1.png"
    assert parse_image_name(name) == {"character": "big_bunny-2", "prompt_index": 4, "seed": 858_993_459, "index": 1}
    assert parse_image_name("holiday.png") is None


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b.update(taskType="IMAGE_VARIATION"), "taskType"),
    (lambda b: b["textToImageParams"].update(text=""), "text must be"),
    (lambda b: b["textToImageParams"].update(text="x" * 1025), "text must be"),
    (lambda b: b["textToImageParams"].update(negativeText="x" * 1025), "negativeText"),
    (lambda b: b["imageGenerationConfig"].update(numberOfImages=0), "numberOfImages"),
    (lambda b: b["imageGenerationConfig"].update(width=1000), "divisible by 16"),
    (lambda b: b["imageGenerationConfig"].update(width=4096, height=1024), "fewer than"),
    (lambda b: b["imageGenerationConfig"].update(width=320, height=1600), "aspect"),
    (lambda b: b["imageGenerationConfig"].update(cfgScale=11), "cfgScale"),
    (lambda b: b["imageGenerationConfig"].update(seed=-1), "seed"),
    (lambda b: b["imageGenerationConfig"].update(seed=True), "integer"),
    (lambda b: b["imageGenerationConfig"].update(quality="best"), "quality"),
    (lambda b: b["imageGenerationConfig"].update(style="x"), "unknown"),
])
def test_request_validation_names_the_broken_limit(mutate, message):
    body = _request().body()
    validate_text_image_body(body)
    mutate(body)
    with pytest.raises(RequestValidationError, match=message):
        validate_text_image_body(body)


def test_invalid_request_is_refused_before_sending(bedrock):
    client, stubber, sent = bedrock
    generator = NovaCanvasGenerator(client, BASE_MODEL)
    with pytest.raises(RequestValidationError):
        generator.generate(_request(width=1000))
    assert sent == []


# --- Nova Canvas through the stubbed client ------------------------------------------------------------


def test_nova_canvas_generates_the_prompt_set_for_base_and_custom_models(bedrock, tmp_path):
    client, stubber, sent = bedrock
    config = EvaluationConfig(seeds=[11], images_per_prompt=2, prompt_templates=["{name} on a ladder."])
    requests = build_requests(config, [CharacterConfig(name="bunny"), CharacterConfig(name="sintel")])
    colours = [(200, 10, 10), (10, 200, 10), (10, 10, 200), (200, 200, 10)]
    for model_id, out in ((BASE_MODEL, "base"), (CUSTOM_MODEL, "finetuned")):
        for k in range(len(requests)):
            stubber.add_response("invoke_model", _answer([_png(colours[2 * k]), _png(colours[2 * k + 1])]),
                                 _expected(model_id))
        generator = NovaCanvasGenerator(client, model_id)
        assert isinstance(generator, ImageGenerator)
        result = generate_prompt_set(generator, requests, tmp_path / out, concurrency=1)
        assert result.counts == {"ok": 2} and result.images == 4
        written = sorted(p.relative_to(tmp_path / out).as_posix() for p in (tmp_path / out).rglob("*.png"))
        assert written == ["bunny/bunny_p0_s11_0.png", "bunny/bunny_p0_s11_1.png",
                           "sintel/sintel_p0_s11_0.png", "sintel/sintel_p0_s11_1.png"]
        pixel = np.asarray(Image.open(tmp_path / out / "sintel" / "sintel_p0_s11_1.png"))[0, 0]
        assert tuple(pixel) == colours[3]
        log = json.loads((tmp_path / out / GENERATION_LOG).read_text())
        assert log["model_id"] == model_id and log["requests"] == 2 and log["images"] == 4
        assert log["records"][0]["files"] == ["bunny/bunny_p0_s11_0.png", "bunny/bunny_p0_s11_1.png"]
        assert read_generation_log(tmp_path / out)["counts"] == {"ok": 2}
    assert len(sent) == 4
    assert [b["textToImageParams"]["text"] for b in sent[:2]] == ["Bunny on a ladder.", "Sintel on a ladder."]
    assert all(b["imageGenerationConfig"] == {"numberOfImages": 2, "width": 1024, "height": 1024, "cfgScale": 8.0,
                                              "seed": 11, "quality": "premium"} for b in sent)


def test_blocked_prompt_and_blocked_outputs_are_recorded_not_fatal(bedrock, tmp_path):
    client, stubber, sent = bedrock
    requests = [_request(prompt_index=k, ordinal=k) for k in range(4)]
    stubber.add_client_error("invoke_model", service_error_code="ValidationException", http_status_code=400,
                             service_message="This request has been blocked by our content filters.",
                             expected_params=_expected(CUSTOM_MODEL))
    stubber.add_response("invoke_model", _answer([_png((1, 2, 3))], error="1 image blocked by content filters"),
                         _expected(CUSTOM_MODEL))
    stubber.add_response("invoke_model", _answer([], error="All images blocked by content filters"),
                         _expected(CUSTOM_MODEL))
    stubber.add_response("invoke_model", _answer([_png((5, 5, 5))] * 3), _expected(CUSTOM_MODEL))
    result = generate_prompt_set(NovaCanvasGenerator(client, CUSTOM_MODEL), requests, tmp_path)
    statuses = [o.status for o in result.outcomes]
    assert statuses == ["blocked_prompt", "partly_blocked", "blocked_output", "ok"]
    assert "content filters" in result.outcomes[0].error
    assert [len(o.files) for o in result.outcomes] == [0, 1, 0, 3]
    log = json.loads((tmp_path / GENERATION_LOG).read_text())
    assert log["counts"] == {"blocked_prompt": 1, "partly_blocked": 1, "blocked_output": 1, "ok": 1}
    assert [(r["requested"], r["returned"]) for r in log["records"]] == [(3, 0), (3, 1), (3, 0), (3, 3)]
    assert sorted(p.name for p in (tmp_path / "bunny").iterdir()) == [
        "bunny_p1_s42_0.png", "bunny_p3_s42_0.png", "bunny_p3_s42_1.png", "bunny_p3_s42_2.png"]
    assert len(sent) == 4


def _invoke_answer(n: int) -> dict:
    """An InvokeModel body of Nova Canvas with ``n`` PNG images."""
    return {"images": [base64.b64encode(_png((9, 9, 9))).decode()] * n}


def test_throttling_is_retried_by_botocore_against_a_throttling_endpoint():
    """Two ThrottlingExceptions, then the images: botocore's adaptive retries (a real client against a local
    endpoint that throttles) retry inside the one call; the generator has no retry loop of its own."""
    with throttling_endpoint(_invoke_answer(3), throttles=2) as endpoint:
        outcome = NovaCanvasGenerator(client_for(endpoint, total_max_attempts=4), BASE_MODEL).generate(_request())
    assert len(endpoint["requests"]) == 3
    assert outcome.status == "ok" and outcome.attempts == 3 and len(outcome.images) == 3


def test_throttling_after_every_attempt_is_a_failed_outcome():
    with throttling_endpoint(_invoke_answer(3), throttles=10) as endpoint:
        outcome = NovaCanvasGenerator(client_for(endpoint, total_max_attempts=2), BASE_MODEL).generate(_request())
    assert len(endpoint["requests"]) == 2  # botocore's attempts, nothing more
    assert outcome.status == "failed" and outcome.attempts == 2 and "ThrottlingException" in outcome.error


def test_access_denied_stops_the_run(bedrock, tmp_path):
    client, stubber, _ = bedrock
    stubber.add_client_error("invoke_model", service_error_code="AccessDeniedException", http_status_code=403,
                             expected_params=_expected(CUSTOM_MODEL))
    with pytest.raises(GenerationError, match="provisioned throughput ARN"):
        generate_prompt_set(NovaCanvasGenerator(client, CUSTOM_MODEL), [_request()], tmp_path)


def test_non_png_answers_are_stored_as_png(bedrock):
    client, stubber, _ = bedrock
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (0, 128, 255)).save(buffer, format="JPEG")
    stubber.add_response("invoke_model", _answer([buffer.getvalue()]), _expected(BASE_MODEL))
    outcome = NovaCanvasGenerator(client, BASE_MODEL).generate(_request(number_of_images=1))
    assert outcome.images[0].startswith(b"\x89PNG")


def test_from_config_keeps_a_read_timeout_of_at_least_300_s(aws_env):
    generator = NovaCanvasGenerator.from_config(EvaluationConfig(max_attempts=2), AwsConfig(read_timeout_s=60),
                                                BASE_MODEL)
    assert generator.client.meta.config.read_timeout >= 300
    assert generator.client.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 2}


# --- folder generator ------------------------------------------------------------------------------------


def test_folder_generator_uses_matching_names_then_cycles(tmp_path):
    folder = tmp_path / "src" / "bunny"
    folder.mkdir(parents=True)
    (folder / "bunny_p0_s42_1.png").write_bytes(_png((255, 0, 0)))
    (folder / "a.png").write_bytes(_png((0, 255, 0)))
    (folder / "b.jpg").write_bytes(b"")  # unreadable only if chosen
    generator = FolderImageGenerator(tmp_path / "src")
    outcome = generator.generate(_request(number_of_images=2, ordinal=0))
    colours = [tuple(np.asarray(Image.open(io.BytesIO(i)))[0, 0]) for i in outcome.images]
    assert colours == [(0, 255, 0), (255, 0, 0)]  # index 0 cycles to a.png, index 1 matches by name
    with pytest.raises(InputError, match="not a readable image"):
        generator.generate(_request(number_of_images=2, ordinal=2, seed=7))  # positions 4 % 3 = 1: b.jpg
    with pytest.raises(InputError, match="sintel"):
        generator.generate(_request(character="sintel"))
    with pytest.raises(InputError, match="does not exist"):
        FolderImageGenerator(tmp_path / "missing")


def test_folder_generator_feeds_generate_prompt_set(tmp_path):
    for character, colour in (("bunny", (200, 200, 200)), ("sintel", (180, 60, 40))):
        (tmp_path / "src" / character).mkdir(parents=True)
        for k in range(2):
            (tmp_path / "src" / character / f"{k}.png").write_bytes(_png(colour))
    requests = build_requests(EvaluationConfig(seeds=[1, 2], images_per_prompt=1), ["bunny", "sintel"])
    result = generate_prompt_set(FolderImageGenerator(tmp_path / "src"), requests, tmp_path / "out", concurrency=3)
    assert result.counts == {"ok": 12} and result.images == 12
    assert len(list((tmp_path / "out" / "sintel").glob("sintel_p*_s*_0.png"))) == 6


def test_validation_exception_that_is_not_the_content_filter_stops_the_run(bedrock, tmp_path):
    """A wrong model ARN is a ValidationException too; it must not read as a blocked prompt on every request."""
    client, stubber, _ = bedrock
    stubber.add_client_error("invoke_model", service_error_code="ValidationException", http_status_code=400,
                             service_message="The provided model identifier is invalid.",
                             expected_params=_expected(CUSTOM_MODEL))
    with pytest.raises(GenerationError, match="model identifier is invalid.*not the content filter"):
        generate_prompt_set(NovaCanvasGenerator(client, CUSTOM_MODEL),
                            [_request(prompt_index=k, ordinal=k) for k in range(3)], tmp_path)
    assert not (tmp_path / GENERATION_LOG).exists() or "blocked_prompt" not in (tmp_path / GENERATION_LOG).read_text()
