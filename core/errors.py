"""Errors for bad input: raised before any expensive work, with a message that says how to fix it."""

from __future__ import annotations


class InputError(ValueError):
    """An input (video, reference folder, manifest, image folder, parameter) is unusable.

    The message names the input and says what to change. The command line prints it without a
    traceback and exits with status 2.
    """


class NoCharacterFoundError(InputError):
    """No configured character was detected in any sampled frame; the message names the thresholds."""


class TooFewRecordsError(InputError):
    """Fewer training records remain than Bedrock's minimum; the message says which filter removed what."""
