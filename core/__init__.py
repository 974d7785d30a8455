"""The ground layer: errors, atomic I/O, images, embeddings, AWS clients and the configuration models.

Imports nothing from steps/, evaluation/, pipeline/ or containers/."""
