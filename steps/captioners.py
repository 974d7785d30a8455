"""``make_captioner``: the backend factory, apart from :mod:`steps.captions`.

The backends import the base module; the base module does not import them, so imports run one way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.config import AwsConfig, CaptionConfig, CharacterConfig
from steps.captions import Captioner, TemplateCaptioner


def make_captioner(config: CaptionConfig, characters: Sequence[CharacterConfig] = (),
                   aws: AwsConfig | None = None, client: Any = None) -> Captioner:
    """Build the captioner named by ``config.backend``: ``template``, or ``nova`` (``nova-pro``, its former name).

    ``characters`` are the configured characters (names and descriptions for prompts and templates);
    ``client`` overrides the ``bedrock-runtime`` client of the Nova backend (tests pass a stubbed one).

    Raises:
        ValueError: an unknown backend.
    """
    if config.backend == "template":
        return TemplateCaptioner(config, characters)
    if config.backend in ("nova", "nova-pro"):
        from steps.nova_captioner import NovaCaptioner

        return NovaCaptioner(config, characters, aws=aws, client=client)
    raise ValueError(f"unknown captions.backend {config.backend!r}; use template or nova")
