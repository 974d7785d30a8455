"""boto3 clients with the project's retry and timeout policy.

Every AWS backend gets its client here, so that all of them use botocore's ``adaptive`` retry mode
(client-side rate limiting plus exponential backoff on throttling; botocore "Retries" guide) and a
read timeout long enough for Nova Canvas (at least 300 s, DESIGN §5).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from core.config import AwsConfig


def client_config(read_timeout_s: int = 300, max_attempts: int = 8, max_pool_connections: int = 16,
                  total_max_attempts: int | None = None) -> Config:
    """botocore ``Config`` with adaptive retries, ``read_timeout_s`` and a connection pool for threads.

    ``max_attempts`` counts retries after the first request (botocore's legacy meaning);
    ``total_max_attempts``, when given, counts every request, the first included, and wins."""
    retries: dict[str, Any] = {"mode": "adaptive", "max_attempts": max_attempts}
    if total_max_attempts is not None:
        retries = {"mode": "adaptive", "total_max_attempts": int(total_max_attempts)}
    return Config(
        retries=retries,
        read_timeout=read_timeout_s,
        connect_timeout=10,
        max_pool_connections=max_pool_connections,
    )


def make_client(service: str, region: str | None = None, profile: str | None = None,
                read_timeout_s: int = 300, max_attempts: int = 8, total_max_attempts: int | None = None,
                **kwargs: Any) -> Any:
    """A boto3 client for ``service`` (for example ``"bedrock-runtime"``) with :func:`client_config`."""
    session = boto3.Session(profile_name=profile, region_name=region)
    config = client_config(read_timeout_s, max_attempts, total_max_attempts=total_max_attempts)
    return session.client(service, config=config, **kwargs)


def client_from_config(service: str, aws: AwsConfig | None = None, min_read_timeout_s: int = 0,
                       use_profile: bool = True, total_max_attempts: int | None = None) -> Any:
    """A client for ``service`` from the ``aws`` section of ``pipeline.yaml`` (defaults where ``None``):
    its region, profile (unless ``use_profile`` is false, as in Lambda), retry attempts and read timeout
    (raised to ``min_read_timeout_s``). ``total_max_attempts`` (the first request included) replaces
    ``aws.max_attempts`` for callers with their own setting, such as ``evaluation.max_attempts``."""
    from core.config import AwsConfig

    aws = aws or AwsConfig()
    return make_client(service, region=aws.region, profile=aws.profile if use_profile else None,
                       read_timeout_s=max(min_read_timeout_s, aws.read_timeout_s), max_attempts=aws.max_attempts,
                       total_max_attempts=total_max_attempts)
