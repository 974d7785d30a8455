"""Captions by an Amazon Nova model through the Bedrock Converse API, with the blog's labelling prompt.

The prompt follows the blog post's "Data Labeling" section (``shared/seeds/blog-part2-character-
consistent-storyboards.txt``): a system prompt asking for a 20 to 30 word alt text that names the
characters, and a user prompt that lists each character with its description and asks for a JSON
object ``{"alt_text": "..."}``. The blog's "Character 1/2/3" are replaced by the configured characters'
display names and descriptions, and the prompt says which of them the detector found in this crop.

Facts respected (DESIGN §5; Bedrock and Nova user guides):

- model: ``captions.model_id``, default Nova 2 Lite through its US cross-Region inference profile
  ``us.amazon.nova-2-lite-v1:0`` (Nova Pro v1, ``us.amazon.nova-pro-v1:0``, stays an option); bare model IDs
  such as ``amazon.nova-pro-v1:0`` are rejected for on-demand use. The model's lifecycle is checked before
  any work by :mod:`steps.model_lifecycle`;
- image: a Converse ``image`` content block (PNG, JPEG, GIF or WebP), inline payload at most 25 MB; Nova
  rescales images to about 896 px a side anyway, so crops are sent as JPEG of at most 2,048 px a side;
- throttling and transient server errors: botocore's adaptive retry mode (:func:`core.aws.make_client`,
  ``aws.max_attempts``) retries inside each call, with its exponential backoff and client-side rate limiting
  (botocore "Retries" guide); the captioner adds no retry loop of its own. When botocore gives up, the crop
  gets the template caption with ``needs_review=True`` and a note naming the error and the attempts.

An answer is accepted when its JSON parses (```` ```json ```` fences and text around the object are
tolerated), ``alt_text`` has ``captions.min_chars``..``captions.max_chars`` characters, and it names at
least one of the crop's characters. Otherwise the request is repeated, up to ``captions.max_attempts``
answers; then the template caption is used with ``needs_review=True`` and a note saying why.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from core.images import ImageFormat, encode_image
from steps.captions import (
    CaptionRequest,
    CaptionResult,
    TemplateCaptioner,
    join_names,
    validate_requests,
)

if TYPE_CHECKING:
    from core.config import AwsConfig, CaptionConfig, CharacterConfig

log = logging.getLogger(__name__)

NOVA_MAX_INLINE_PAYLOAD_BYTES = 25 * 1024 * 1024
"""Total inline payload of a Nova request (Nova user guide, "Image understanding")."""
NOVA_IMAGE_MAX_SIDE_PX = 2048
"""Longest side sent; Nova rescales to about 896 px (same page), so more pixels only cost bandwidth."""
_IMAGE_BUDGET_BYTES = NOVA_MAX_INLINE_PAYLOAD_BYTES * 3 // 4 - 256 * 1024  # base64 on the wire, plus the prompt

TRANSIENT_ERROR_CODES = frozenset({
    "ThrottlingException", "TooManyRequestsException", "ServiceUnavailableException",
    "InternalServerException", "ModelNotReadyException", "ModelTimeoutException",
})
"""Converse errors that end in the template caption flagged for review rather than stopping the step (Bedrock
API reference, Converse "Errors"). botocore retries all but ``ModelTimeoutException`` inside the call
(:func:`steps.retry_policy.is_retryable` gives its rules); when one comes back, its attempts are spent."""

SYSTEM_PROMPT = (
    "You are an expert image description specialist who creates concise, natural alt text that makes "
    "visual content accessible while maintaining clarity and focus. Your task is to analyze the provided "
    "image and provide a creative description (20-30 words) that emphasizes the main characters, capturing "
    "the essential elements of their interaction while avoiding unnecessary details."
)
"""The blog's system prompt, with "the Three main characters" made independent of the cast size."""

USER_PROMPT_TEMPLATE = """1. Identify the main characters in the image: {cast}. At least one will be in the picture, \
so provide at a minimum a description with at least one character name.
{cast_lines}
2. Just state their name WITHOUT adding any standard characteristics.
3. Only capture visual elements outside the standard characteristics.
4. Capture the core interaction between them.
5. Include only contextual details that are crucial for understanding the scene.
6. Create a natural, flowing description using everyday language.

This picture shows {present}; name {pronoun} in the description.{scene_line}

[Identify the main characters]
[Assessment of their primary interaction]
[Selection of crucial contextual elements]
[Crafting of concise, natural description]

{{
    "alt_text": "[Concise, natural description focusing on the main characters]"
}}

Note: Provide only the JSON object as the final response."""
"""The blog's labelling prompt; ``{cast_lines}`` holds one ``- "Name": description`` line per character."""


class NovaCaptionError(RuntimeError):
    """Bedrock refused a Converse request for a reason retries cannot fix (access, model ID, request)."""


class RejectedAnswer(ValueError):
    """A model answer that cannot be used as a caption; the message says why."""


def parse_alt_text(text: str) -> str:
    """Extract ``alt_text`` from a model answer.

    Accepts a bare JSON object, one inside ```` ```json ```` fences, or one surrounded by other text;
    the first JSON object holding a string ``alt_text`` wins. Whitespace is collapsed.

    Raises:
        RejectedAnswer: no JSON object with a string ``alt_text`` was found.
    """
    decoder = json.JSONDecoder()
    cleaned = re.sub(r"```(?:json|JSON)?", " ", text or "")
    for match in re.finditer(r"\{", cleaned):
        try:
            obj, _ = decoder.raw_decode(cleaned, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("alt_text"), str):
            return " ".join(obj["alt_text"].split())
    snippet = " ".join((text or "").split())[:80]
    raise RejectedAnswer(f"answer has no JSON object with a string alt_text: {snippet!r}")


def names_in(caption: str, names: Sequence[str]) -> list[str]:
    """The ``names`` that occur in ``caption`` as whole words, ignoring case (``"Bunny's"`` counts)."""
    return [n for n in names if re.search(r"(?<!\w)" + re.escape(n.strip()) + r"(?!\w)", caption, re.IGNORECASE)]


class NovaCaptioner:
    """Amazon Nova captions (``captions.model_id``: Nova 2 Lite by default) through ``bedrock-runtime`` ``converse``.

    Implements :class:`steps.captions.Captioner`. Requests run in a thread pool of
    ``config.concurrency`` workers; results come back in request order.

    Args:
        config: the ``captions`` settings (model ID, lengths, attempts, temperature, max tokens).
        characters: the configured characters (``caption_name``, ``description``) listed in the prompt.
        client: a ``bedrock-runtime`` client; default :func:`core.aws.make_client` with ``aws``.
        aws: region, profile, retries for the default client.
        image_format: ``"jpeg"`` or ``"png"`` for the image block.

    Attributes:
        usage: summed ``usage.inputTokens`` and ``usage.outputTokens`` of every answer.
    """

    def __init__(self, config: CaptionConfig, characters: Sequence[CharacterConfig] = (), client: Any = None,
                 aws: AwsConfig | None = None, image_format: ImageFormat = "jpeg") -> None:
        if image_format not in ("jpeg", "png"):
            raise ValueError(f"image_format must be 'jpeg' or 'png', got {image_format!r}")
        if client is None:
            from core.aws import client_from_config

            client = client_from_config("bedrock-runtime", aws)
        self.client = client
        self.config = config
        self.model_id = config.model_id
        self.name = "nova"
        self.image_format: ImageFormat = image_format
        self._lock = threading.Lock()
        self.characters = list(characters)
        self.fallback = TemplateCaptioner(config, characters)
        self.usage = {"inputTokens": 0, "outputTokens": 0}

    # -- prompt -------------------------------------------------------------------------------------

    def cast(self, request: CaptionRequest) -> list[tuple[str, str]]:
        """``(display name, description)`` of every configured character, then any other character of
        the request; a request's own description wins over the configured one."""
        given = {n: d for n, d in zip(request.characters, request.descriptions, strict=False) if d and d.strip()}
        cast = [(c.caption_name, given.get(c.caption_name) or c.description) for c in self.characters]
        known = {name for name, _ in cast}
        cast += [(n, given.get(n, "")) for n in request.characters if n not in known]
        return cast

    def user_prompt(self, request: CaptionRequest) -> str:
        """The blog's labelling prompt for one crop, naming the configured characters and those present."""
        cast = self.cast(request)
        lines = "\n".join(f'  - "{name}": {desc.strip() or "no description given"}' for name, desc in cast)
        present = list(request.characters)
        scene = f"\nContext: {request.scene.strip()}." if request.scene.strip() else ""
        return USER_PROMPT_TEMPLATE.format(cast=join_names([n for n, _ in cast]), cast_lines=lines,
                                           present=join_names(present),
                                           pronoun="them" if len(present) > 1 else "this character",
                                           scene_line=scene)

    def request(self, request: CaptionRequest) -> dict[str, Any]:
        """The ``converse`` keyword arguments for one crop (image first, then the prompt)."""
        encoded = encode_image(request.image, max_bytes=_IMAGE_BUDGET_BYTES, image_format=self.image_format,
                               max_side=NOVA_IMAGE_MAX_SIDE_PX, jpeg_quality=95,
                               what=f"crop {request.item_id!r}")
        return {
            "modelId": self.model_id,
            "system": [{"text": SYSTEM_PROMPT}],
            "messages": [{
                "role": "user",
                "content": [
                    {"image": {"format": encoded.image_format, "source": {"bytes": encoded.data}}},
                    {"text": self.user_prompt(request)},
                ],
            }],
            "inferenceConfig": {"maxTokens": int(self.config.max_tokens),
                                "temperature": float(self.config.temperature)},
        }

    # -- answers ------------------------------------------------------------------------------------

    def check_answer(self, response: dict[str, Any], request: CaptionRequest) -> str:
        """The caption in a Converse ``response``, or :class:`RejectedAnswer` saying why it is unusable."""
        stop = response.get("stopReason")
        if stop in ("content_filtered", "guardrail_intervened"):
            raise RejectedAnswer(f"the model stopped with {stop}")
        content = response.get("output", {}).get("message", {}).get("content", [])
        text = "".join(block.get("text", "") for block in content if isinstance(block, dict))
        try:
            caption = parse_alt_text(text)
        except RejectedAnswer as err:
            if stop == "max_tokens":
                raise RejectedAnswer(f"the answer was cut at maxTokens={self.config.max_tokens}") from err
            raise
        if not self.config.min_chars <= len(caption) <= self.config.max_chars:
            raise RejectedAnswer(f"alt_text has {len(caption)} characters; allowed "
                                 f"{self.config.min_chars}..{self.config.max_chars}")
        if not names_in(caption, request.characters):
            raise RejectedAnswer(f"alt_text names none of {list(request.characters)}: {caption[:80]!r}")
        return caption

    def _converse(self, kwargs: dict[str, Any], item_id: str) -> tuple[dict[str, Any] | None, int, str | None]:
        """One Converse call (botocore retries transient errors inside it): ``(response | None, attempts, error)``.

        Raises:
            NovaCaptionError: an error that a retry cannot fix (validation, access, unknown model).
        """
        try:
            response = self.client.converse(**kwargs)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            message = err.response.get("Error", {}).get("Message", "")
            attempts = int(err.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)) + 1
            if code not in TRANSIENT_ERROR_CODES:
                hint = (" (check captions.model_id: on-demand Nova models need an inference profile such as "
                        "us.amazon.nova-2-lite-v1:0, and model access must be granted in this Region)"
                        if code in ("ValidationException", "AccessDeniedException", "ResourceNotFoundException")
                        else "")
                raise NovaCaptionError(f"Converse on {self.model_id} failed for {item_id!r}: {code}: "
                                       f"{message}{hint}") from err
            log.info("Converse %s for %s after %d attempts (botocore's retries)", code, item_id, attempts)
            return None, attempts, f"{code} after {attempts} attempts (botocore's retry mode)"
        attempts = int(response.get("ResponseMetadata", {}).get("RetryAttempts", 0)) + 1
        return response, attempts, None

    def caption_one(self, request: CaptionRequest) -> CaptionResult:
        """Caption one crop (see the module docstring for the accept / retry / fallback rules).

        Raises:
            NovaCaptionError: Bedrock refused the request for a non-transient reason.
        """
        kwargs = self.request(request)
        calls = 0
        reasons: list[str] = []
        for _ in range(self.config.max_attempts):
            response, used, error = self._converse(kwargs, request.item_id)
            calls += used
            if response is None:
                reasons.append(str(error))
                break
            usage = response.get("usage") or {}
            with self._lock:
                self.usage["inputTokens"] += int(usage.get("inputTokens", 0))
                self.usage["outputTokens"] += int(usage.get("outputTokens", 0))
            try:
                caption = self.check_answer(response, request)
            except RejectedAnswer as err:
                reasons.append(str(err))
                log.info("Nova answer for %s rejected: %s", request.item_id, err)
                continue
            return CaptionResult(item_id=request.item_id, caption=caption, source=self.model_id, attempts=calls)
        note = f"{self.model_id} gave no usable caption ({len(reasons)} answer(s)): {reasons[-1]}"
        return CaptionResult(item_id=request.item_id, caption=self.fallback.build(request), source="template",
                             attempts=calls, needs_review=True, note=note[:500])

    def caption(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
        """Caption every request; results in request order.

        An unusable answer never raises: it falls back to the template caption with
        ``needs_review=True``. Requests are checked before the first call.

        Raises:
            core.errors.InputError: a request without an id, image or character name.
            NovaCaptionError: Bedrock refused a request for a non-transient reason (access denied,
                unknown or bare model ID); requests not yet started are cancelled.
        """
        validate_requests(requests)
        if self.config.concurrency == 1 or len(requests) <= 1:
            return [self.caption_one(r) for r in requests]
        pool = ThreadPoolExecutor(max_workers=min(self.config.concurrency, len(requests)))
        try:
            futures = [pool.submit(self.caption_one, r) for r in requests]
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


NovaProCaptioner = NovaCaptioner
"""The former name of :class:`NovaCaptioner` (``captions.backend: nova-pro``), kept for existing imports."""
