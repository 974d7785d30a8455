"""A local HTTP endpoint that throttles: answers the first ``throttles`` requests with HTTP 429 and an AWS
``ThrottlingException`` (REST-JSON error shape: ``x-amzn-ErrorType`` header and ``message`` body), then the
canned JSON answer. A real boto3 client pointed at it (``endpoint_url``) runs botocore's own retry handler,
which botocore's Stubber bypasses, so tests see the retries that would happen against AWS.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
from botocore.config import Config


@contextmanager
def throttling_endpoint(answer: dict[str, Any], throttles: int) -> Iterator[dict[str, Any]]:
    """Serve on 127.0.0.1; yields ``{"url": ..., "requests": [paths]}`` (the paths of every request received)."""
    state: dict[str, Any] = {"requests": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server API)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state["requests"].append(self.path)
            if len(state["requests"]) <= throttles:
                body, status = {"message": "Too many requests, please wait before trying again."}, 429
                headers = {"x-amzn-ErrorType": "ThrottlingException"}
            else:
                body, status, headers = answer, 200, {}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        state["url"] = f"http://127.0.0.1:{server.server_address[1]}"
        yield state
    finally:
        server.shutdown()
        server.server_close()


def client_for(endpoint: dict[str, Any], service: str = "bedrock-runtime", total_max_attempts: int = 3,
               mode: str = "adaptive") -> Any:
    """A real boto3 client for ``service`` at the endpoint, with botocore's ``mode`` retries and dummy keys.

    ``total_max_attempts`` counts the first request too (botocore's ``max_attempts`` counts only retries)."""
    config = Config(retries={"mode": mode, "total_max_attempts": total_max_attempts}, connect_timeout=5,
                    read_timeout=30)
    return boto3.client(service, region_name="us-east-1", endpoint_url=endpoint["url"], config=config,
                        aws_access_key_id="testing", aws_secret_access_key="testing")
