"""Template captions, make_captioner, and Nova Pro captions through a stubbed Converse API."""

from __future__ import annotations

import json
import re
import threading

import boto3
import numpy as np
import pytest
from botocore.stub import Stubber
from throttling_endpoint import client_for, throttling_endpoint

from core.errors import InputError
from core.images import encode_image
from steps.captioners import make_captioner
from steps.captions import DEFAULT_SCENE, Captioner, CaptionRequest, TemplateCaptioner, join_names, truncate_caption
from steps.nova_captioner import (
    SYSTEM_PROMPT,
    NovaCaptionError,
    NovaProCaptioner,
    RejectedAnswer,
    names_in,
    parse_alt_text,
)

MODEL = "us.amazon.nova-2-lite-v1:0"  # the default: Nova 2 Lite through its US inference profile
GOOD = ("Bunny stretches beside a grassy burrow in the morning sun, yawning while butterflies "
        "drift past the mossy stones behind him.")


def caption_config(**overrides):
    from core.config import CaptionConfig

    return CaptionConfig(**overrides)


def characters():
    from core.config import CharacterConfig

    return [CharacterConfig(name="bunny", description="a big, round, white-grey rabbit with long ears"),
            CharacterConfig(name="sintel", display_name="Sintel", description="a young woman with a red scarf")]


def crop(seed: int = 0, size=(64, 48)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)


def request(item_id="bunny_bbb_f125_0", names=("Bunny",), scene="", seed=0) -> CaptionRequest:
    return CaptionRequest(item_id=item_id, image=crop(seed), characters=tuple(names), scene=scene)


# -- template captions ------------------------------------------------------------------------------

def test_template_caption_names_and_scene():
    cap = TemplateCaptioner(caption_config(), characters())
    assert isinstance(cap, Captioner) and cap.name == "template"
    results = cap.caption([request(scene="close-up, bright daylight"),
                           request("pair_1", ("Bunny", "Sintel"), "meadow"),
                           request("trio_1", ("Bunny", "Sintel", "Frank"))])
    assert [r.caption for r in results] == ["Bunny, close-up, bright daylight", "Bunny and Sintel, meadow",
                                            f"Bunny, Sintel and Frank, {DEFAULT_SCENE}"]
    assert all(r.source == "template" and r.attempts == 0 and not r.needs_review for r in results)
    assert [r.item_id for r in results] == ["bunny_bbb_f125_0", "pair_1", "trio_1"]


def test_template_description_field_and_empty_fields():
    cfg = caption_config(template="{names}, {description}, {scene}")
    cap = TemplateCaptioner(cfg, characters())
    assert cap.build(request(scene="in the forest")) == \
        "Bunny, a big, round, white-grey rabbit with long ears, in the forest"
    given = CaptionRequest("x", crop(), ("Bunny",), descriptions=("a sleepy rabbit",), scene="at dawn")
    assert cap.build(given) == "Bunny, a sleepy rabbit, at dawn"
    unknown = TemplateCaptioner(caption_config(template="{names}, {description}"))  # no configured characters
    assert unknown.build(request()) == "Bunny"  # no dangling comma


def test_template_length_limits():
    long_desc = "a very large rabbit " * 10
    cfg = caption_config(template="{names} with {description}", max_chars=40)
    text = TemplateCaptioner(cfg).build(CaptionRequest("x", crop(), ("Bunny",), descriptions=(long_desc,)))
    full = " ".join(f"Bunny with {long_desc}".split())
    assert 3 <= len(text) <= 40
    assert full.startswith(text) and full[len(text)] == " "
    short = TemplateCaptioner(caption_config(template="{names}")).build(request(names=("Al",)))
    assert len(short) >= 3 and short.startswith("Al")
    assert truncate_caption("Supercalifragilistic", 5) == "Super"
    assert join_names(["A", "B"]) == "A and B"


def test_template_rejects_bad_templates_and_requests():
    with pytest.raises(InputError, match="unknown field"):
        TemplateCaptioner(caption_config(template="{names} in {place}"))
    cap = TemplateCaptioner(caption_config())
    with pytest.raises(InputError, match="names no character"):
        cap.caption([request(names=())])
    with pytest.raises(InputError, match="repeats"):
        cap.caption([request("a"), request("a")])
    with pytest.raises(InputError, match="descriptions"):
        cap.caption([CaptionRequest("a", crop(), ("Bunny",), descriptions=("x", "y"))])
    with pytest.raises(InputError, match="uint8"):
        cap.caption([CaptionRequest("a", np.zeros((4, 4)), ("Bunny",))])


def test_make_captioner_picks_the_backend(aws_env):
    assert isinstance(make_captioner(caption_config(), characters()), TemplateCaptioner)
    client = boto3.client("bedrock-runtime", region_name="us-east-1")
    nova = make_captioner(caption_config(backend="nova"), characters(), client=client)
    assert isinstance(nova, NovaProCaptioner) and isinstance(nova, Captioner)
    assert nova.client is client and nova.model_id == MODEL
    former = make_captioner(caption_config(backend="nova-pro"), characters(), client=client)  # the former name
    assert isinstance(former, NovaProCaptioner) and former.model_id == MODEL


def test_nova_pro_v1_stays_an_option(converse):
    client, stubber = converse
    cap = NovaProCaptioner(caption_config(backend="nova", model_id="us.amazon.nova-pro-v1:0", concurrency=1),
                           characters(), client=client)
    req = request()
    params = {**expected(cap, req), "modelId": "us.amazon.nova-pro-v1:0"}
    stubber.add_response("converse", answer(json.dumps({"alt_text": GOOD})), params)
    [result] = cap.caption([req])
    assert result.caption == GOOD and result.source == "us.amazon.nova-pro-v1:0"


# -- Nova Pro through a stubbed Converse -------------------------------------------------------------



@pytest.fixture
def converse(aws_env):
    client = boto3.client("bedrock-runtime", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def answer(text: str, stop: str = "end_turn") -> dict:
    return {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": stop,
            "usage": {"inputTokens": 1200, "outputTokens": 45, "totalTokens": 1245}, "metrics": {"latencyMs": 900}}


def expected(captioner: NovaProCaptioner, req: CaptionRequest, max_tokens=300, temperature=0.3) -> dict:
    """The exact Converse parameters: a small crop goes as JPEG (quality 95) at its own size."""
    jpeg = encode_image(req.image, max_bytes=10**8, image_format="jpeg", jpeg_quality=95).data
    return {
        "modelId": MODEL,
        "system": [{"text": SYSTEM_PROMPT}],
        "messages": [{"role": "user", "content": [
            {"image": {"format": "jpeg", "source": {"bytes": jpeg}}},
            {"text": captioner.user_prompt(req)},
        ]}],
        "inferenceConfig": {"maxTokens": max_tokens, "temperature": temperature},
    }


def nova(client, **config) -> NovaProCaptioner:
    config.setdefault("concurrency", 1)
    cfg = caption_config(backend="nova-pro", **config)
    return NovaProCaptioner(cfg, characters(), client=client)


def test_prompt_follows_the_blog_and_names_the_cast():
    cap = NovaProCaptioner(caption_config(backend="nova-pro"), characters(), client=object())
    assert "(20-30 words)" in SYSTEM_PROMPT and "main characters" in SYSTEM_PROMPT
    prompt = cap.user_prompt(request(names=("Bunny",), scene="wide shot"))
    assert "Identify the main characters in the image: Bunny and Sintel" in prompt
    assert '"Bunny": a big, round, white-grey rabbit with long ears' in prompt
    assert '"Sintel": a young woman with a red scarf' in prompt
    assert "This picture shows Bunny; name this character" in prompt and "Context: wide shot." in prompt
    assert '"alt_text": "[Concise, natural description focusing on the main characters]"' in prompt
    assert prompt.rstrip().endswith("Provide only the JSON object as the final response.")
    assert "Character 1" not in prompt
    extra = cap.user_prompt(CaptionRequest("x", crop(), ("Bunny", "Frank"), descriptions=("", "a flying squirrel")))
    assert '"Frank": a flying squirrel' in extra and "This picture shows Bunny and Frank; name them" in extra


def test_good_answer(converse):
    client, stubber = converse
    cap = nova(client)
    req = request()
    stubber.add_response("converse", answer(json.dumps({"alt_text": GOOD})), expected(cap, req))
    [result] = cap.caption([req])
    assert result.caption == GOOD and result.source == MODEL
    assert result.attempts == 1 and not result.needs_review and result.note is None
    assert cap.usage == {"inputTokens": 1200, "outputTokens": 45}


def test_fenced_answer_with_text_around(converse):
    client, stubber = converse
    cap = nova(client, temperature=0.5, max_tokens=200)
    req = request()
    text = f'Here is the description:\n```json\n{{\n  "alt_text": "{GOOD}"\n}}\n```\nLet me know if you need more.'
    stubber.add_response("converse", answer(text), expected(cap, req, max_tokens=200, temperature=0.5))
    [result] = cap.caption([req])
    assert result.caption == GOOD and result.attempts == 1 and not result.needs_review


def test_unparseable_answer_then_good_one(converse):
    client, stubber = converse
    cap = nova(client)
    req = request()
    stubber.add_response("converse", answer("Bunny is standing near a burrow."), expected(cap, req))
    stubber.add_response("converse", answer(json.dumps({"alt_text": GOOD})), expected(cap, req))
    [result] = cap.caption([req])
    assert result.caption == GOOD and result.attempts == 2 and not result.needs_review


def test_answer_that_never_names_the_character_falls_back_for_review(converse):
    client, stubber = converse
    cap = nova(client, max_attempts=3)
    req = request(scene="morning")
    for _ in range(3):
        text = json.dumps({"alt_text": "A large rabbit stretches beside a grassy burrow while butterflies drift by."})
        stubber.add_response("converse", answer(text), expected(cap, req))
    [result] = cap.caption([req])
    assert result.needs_review and result.source == "template" and result.attempts == 3
    assert result.caption == TemplateCaptioner(caption_config(), characters()).build(req) == "Bunny, morning"
    assert "names none of ['Bunny']" in result.note and "3 answer(s)" in result.note


def test_too_long_or_filtered_answers_are_rejected(converse):
    client, stubber = converse
    cap = nova(client, max_attempts=2, max_chars=60)
    req = request()
    stubber.add_response("converse", answer(json.dumps({"alt_text": GOOD})), expected(cap, req))
    stubber.add_response("converse", answer("", stop="content_filtered"), expected(cap, req))
    [result] = cap.caption([req])
    assert result.needs_review and result.attempts == 2
    assert "content_filtered" in result.note
    assert len(result.caption) <= 60


def converse_answer(alt_text: str) -> dict:
    """A Converse response body as bedrock-runtime returns it."""
    return {"output": {"message": {"role": "assistant", "content": [{"text": json.dumps({"alt_text": alt_text})}]}},
            "stopReason": "end_turn", "usage": {"inputTokens": 900, "outputTokens": 40, "totalTokens": 940},
            "metrics": {"latencyMs": 12}}


def test_throttling_is_retried_by_botocore_against_a_throttling_endpoint():
    """Two ThrottlingExceptions, then an answer: botocore's adaptive retry mode, as core.aws configures it (a real
    client, a local endpoint that throttles), retries inside the one call; the captioner adds no loop of its own."""
    with throttling_endpoint(converse_answer(GOOD), throttles=2) as endpoint:
        cap = nova(client_for(endpoint, total_max_attempts=3))
        [result] = cap.caption([request()])
    assert len(endpoint["requests"]) == 3 and all(path.endswith("/converse") for path in endpoint["requests"])
    assert result.caption == GOOD and result.attempts == 3 and not result.needs_review


def test_throttling_that_outlasts_botocores_attempts_falls_back_for_review():
    with throttling_endpoint(converse_answer(GOOD), throttles=10) as endpoint:
        cap = nova(client_for(endpoint, total_max_attempts=2))
        [result] = cap.caption([request()])
    assert len(endpoint["requests"]) == 2  # botocore's two attempts, nothing more
    assert result.needs_review and result.source == "template" and result.attempts == 2
    assert "ThrottlingException after 2 attempts (botocore's retry mode)" in result.note


def test_access_denied_raises_with_a_hint(converse):
    client, stubber = converse
    cap = nova(client)
    req = request()
    stubber.add_client_error("converse", service_error_code="AccessDeniedException",
                             service_message="You don't have access to the model", http_status_code=403,
                             expected_params=expected(cap, req))
    with pytest.raises(NovaCaptionError, match="inference profile such as us.amazon.nova-2-lite-v1:0"):
        cap.caption([req])


class _FakeConverse:
    """Thread-safe fake Converse: names whoever the prompt says is in the picture."""

    def __init__(self) -> None:
        self.threads: set[int] = set()
        self._lock = threading.Lock()

    def converse(self, **kwargs):
        prompt = kwargs["messages"][0]["content"][1]["text"]
        who = re.search(r"This picture shows (.+?); name", prompt).group(1)
        with self._lock:
            self.threads.add(threading.get_ident())
        return answer(json.dumps({"alt_text": f"{who} pauses in a sunlit meadow, looking curiously at a butterfly."}))


def test_concurrent_captions_keep_request_order():
    client = _FakeConverse()
    cap = NovaProCaptioner(caption_config(backend="nova-pro", concurrency=4), characters(), client=client)
    names = [("Bunny",), ("Sintel",), ("Bunny", "Sintel")] * 4
    reqs = [request(f"item_{i}", n, seed=i) for i, n in enumerate(names)]
    results = cap.caption(reqs)
    assert [r.item_id for r in results] == [r.item_id for r in reqs]
    for res, n in zip(results, names, strict=True):
        assert res.caption.startswith(" and ".join(n)) and not res.needs_review
    assert len(client.threads) > 1


def test_large_crop_is_downscaled_for_converse():
    cap = NovaProCaptioner(caption_config(backend="nova-pro"), characters(), client=object())
    big = CaptionRequest("big", crop(size=(3000, 1500)), ("Bunny",))
    block = cap.request(big)["messages"][0]["content"][0]["image"]
    assert block["format"] == "jpeg" and len(block["source"]["bytes"]) < 25 * 1024 * 1024
    import cv2

    decoded = cv2.imdecode(np.frombuffer(block["source"]["bytes"], np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape[:2] == (1024, 2048)


def test_parse_alt_text_variants():
    assert parse_alt_text('{"alt_text": "Bunny  waves"}') == "Bunny waves"
    assert parse_alt_text('```json\n{"alt_text": "Bunny waves"}\n```') == "Bunny waves"
    assert parse_alt_text('Sure! {draft} then {"alt_text": "Bunny waves", "x": {"y": 1}} done') == "Bunny waves"
    with pytest.raises(RejectedAnswer):
        parse_alt_text('{"caption": "Bunny waves"}')
    with pytest.raises(RejectedAnswer):
        parse_alt_text('{"alt_text": "Bunny waves"')  # cut at maxTokens
    assert names_in("Bunny's ears twitch", ["Bunny", "Sintel"]) == ["Bunny"]
    assert names_in("Bunnyland", ["Bunny"]) == []
