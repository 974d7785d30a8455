"""What every Lambda handler needs: the configuration and boto3 clients.

The configuration is ``pipeline.yaml``, found through the environment variable ``STORYBOARD_CONFIG``
(a path or an ``s3://`` URI), else ``$LAMBDA_TASK_ROOT/pipeline.yaml`` (the image copies it there),
else the defaults. Clients come from :func:`core.aws.make_client` (adaptive retries) in the
configured region; tests inject their own (moto or Stubber) through ``Runtime(clients=...)``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.aws import client_from_config, make_client
from core.config import StoryboardConfig, load_config

log = logging.getLogger(__name__)

CONFIG_ENV = "STORYBOARD_CONFIG"


@dataclass
class Runtime:
    """Configuration plus lazily created clients.

    Attributes:
        config: the validated ``pipeline.yaml``.
        clients: clients by service name (``"sagemaker"``, ``"bedrock"``, ``"s3"``,
            ``"sagemaker-a2i-runtime"``); missing ones are created on first use.
    """

    config: StoryboardConfig
    clients: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        """The client for ``service`` (created once)."""
        if service not in self.clients:
            self.clients[service] = client_from_config(service, self.config.aws, use_profile=False)
        return self.clients[service]

    @classmethod
    def from_environment(cls) -> Runtime:
        """The runtime of a Lambda invocation (see the module docstring for where the config comes from)."""
        return cls(load_lambda_config())


def load_lambda_config(environ: dict[str, str] | None = None) -> StoryboardConfig:
    """Load ``pipeline.yaml`` from ``STORYBOARD_CONFIG`` (path or ``s3://``), the task root, or defaults.

    Raises:
        ConfigError: the file exists but is invalid.
    """
    env = os.environ if environ is None else environ
    source = env.get(CONFIG_ENV, "").strip()
    if source.startswith("s3://"):
        bucket, _, key = source[5:].partition("/")
        body = make_client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "pipeline.yaml"
            path.write_bytes(body)
            return load_config(path)
    if source:
        return load_config(source)
    default = Path(env.get("LAMBDA_TASK_ROOT", "/var/task")) / "pipeline.yaml"
    if default.is_file():
        return load_config(default)
    log.warning("no %s and no %s: using the default configuration", CONFIG_ENV, default)
    return load_config(None)


_CACHED: Runtime | None = None


def default_runtime() -> Runtime:
    """The runtime shared by invocations of a warm Lambda container."""
    global _CACHED
    if _CACHED is None:
        _CACHED = Runtime.from_environment()
    return _CACHED
