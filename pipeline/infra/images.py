"""The docker commands of ``storyboard images build|push``: four images, built from the repository root.

Each image is ``(name, Dockerfile, stack output of its repository)``; :func:`build_commands` and
:func:`push_commands` return argv lists (run by the command, printed first), :func:`registry_login` turns
``ecr.get_authorization_token`` into the ``docker login`` argv and its password (given on standard input,
never on the command line).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from core.errors import InputError

IMAGES = (
    ("processing", "containers/processing/Dockerfile", "ProcessingRepositoryUri"),
    ("training", "containers/training/Dockerfile", "TrainingRepositoryUri"),
    ("inference", "containers/inference/Dockerfile", "InferenceRepositoryUri"),
    ("lambda", "containers/lambda/Dockerfile", "LambdaRepositoryUri"),
)


def repositories(outputs: Mapping[str, str]) -> dict[str, str]:
    """Image name -> repository URI from the stack's outputs.

    Raises:
        InputError: an output is missing (the stack is not this project's, or predates the repositories).
    """
    missing = [key for _, _, key in IMAGES if not outputs.get(key)]
    if missing:
        raise InputError(f"the stack has no output {', '.join(missing)}; deploy it with `storyboard deploy` first")
    return {name: outputs[key] for name, _, key in IMAGES}


def build_commands(repos: Mapping[str, str], tag: str) -> list[list[str]]:
    """``docker build -f <Dockerfile> -t <repository>:<tag> .`` per image (context: the repository root)."""
    return [["docker", "build", "-f", dockerfile, "-t", f"{repos[name]}:{tag}", "."] for name, dockerfile, _ in IMAGES]


def push_commands(repos: Mapping[str, str], tag: str) -> list[list[str]]:
    """``docker push <repository>:<tag>`` per image."""
    return [["docker", "push", f"{repos[name]}:{tag}"] for name, _, _ in IMAGES]


def registry_login(ecr: Any) -> tuple[list[str], str]:
    """``(docker login argv, password)`` from ``ecr.get_authorization_token`` (the token is ``AWS:<password>``
    in base64; it is valid for 12 hours, ECR API reference)."""
    data = ecr.get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode("utf-8").partition(":")
    registry = data["proxyEndpoint"].removeprefix("https://")
    return ["docker", "login", "--username", user, "--password-stdin", registry], password
