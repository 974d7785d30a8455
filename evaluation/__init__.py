"""Image embeddings, similarity metrics, image generation and the evaluation report."""
