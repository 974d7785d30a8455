"""Sub-commands of the ``storyboard`` command line; each module exposes ``register(subparsers)``."""
