"""``make_embedder``: the backend factory, apart from :mod:`core.embeddings`.

The backends import the base module; the base module does not import them, so imports run one way."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.config import AwsConfig, EmbeddingConfig
from core.embeddings import ColorTextureDescriptor, ImageEmbedder


def make_embedder(config: EmbeddingConfig, aws: AwsConfig | None = None, client=None,
                  purpose: str = "extraction") -> ImageEmbedder:
    """Build the embedding backend named by ``config.backend``.

    ``client`` overrides the ``bedrock-runtime`` client of the Titan and Nova backends (tests pass a stubbed one).
    ``purpose`` picks the ``local`` descriptor: ``"extraction"`` (ExtractFrames' de-duplication, whose thresholds
    were tuned on it): :class:`ColorTextureDescriptor`; ``"evaluation"`` (the Evaluate step):
    :class:`core.layout_descriptor.LabLayoutDescriptor`, which separates held-out real crops of each
    character from the rest of its film better (see that module for the figures).

    Raises:
        ValueError: an unknown backend, or ``onnx`` without a model path.
    """
    if purpose not in ("extraction", "evaluation"):
        raise ValueError(f"unknown purpose {purpose!r}; use extraction or evaluation")
    if config.backend == "local":
        if purpose == "evaluation":
            from core.layout_descriptor import LabLayoutDescriptor

            return LabLayoutDescriptor()
        return ColorTextureDescriptor()
    if config.backend == "titan":
        from core.titan_embeddings import TitanImageEmbedder

        return TitanImageEmbedder.from_config(config, aws, client=client)
    if config.backend == "nova":
        from core.nova_embeddings import NovaImageEmbedder

        return NovaImageEmbedder.from_config(config, aws, client=client)
    if config.backend == "onnx":
        from core.onnx_encoder import OnnxImageEmbedder

        if not config.onnx_model_path:
            raise ValueError("embeddings.backend 'onnx' needs embeddings.onnx_model_path")
        return OnnxImageEmbedder(config.onnx_model_path, input_size=config.onnx_input_size)
    raise ValueError(f"unknown embeddings.backend {config.backend!r}; use local, titan, nova or onnx")
