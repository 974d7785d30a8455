"""Where an endpoint deployment happens: SageMaker (:class:`SageMakerEndpointDeployment`, a boto3
``sagemaker`` client) or a plan on disk (:class:`PlannedEndpointDeployment`, offline). The logic that
drives them is :mod:`steps.endpoint_deployment`, which re-exports these names.

Both validate every create request against botocore's ``sagemaker`` service model before it is sent or
recorded (:func:`steps.request_validation.validate_request`: required members, types, lengths, enums,
patterns), so an offline plan fails where SageMaker would.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from core import io as sio
from steps.request_validation import validate_request

log = logging.getLogger(__name__)

LOCAL_PLACEHOLDER_BUCKET = "s3://storyboard-local-placeholder"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@runtime_checkable
class ModelDeployment(Protocol):
    """Where models, endpoint configurations and endpoints live (SageMaker, or a plan on disk)."""

    def model_exists(self, name: str) -> bool:
        """Whether a model called ``name`` exists."""
        ...

    def endpoint_config_exists(self, name: str) -> bool:
        """Whether an endpoint configuration called ``name`` exists."""
        ...

    def describe_endpoint(self, name: str) -> dict[str, Any] | None:
        """``{"EndpointName", "EndpointConfigName", "EndpointStatus", ...}``, or ``None`` when absent."""
        ...

    def create_model(self, request: Mapping[str, Any]) -> None:
        """``create_model``."""
        ...

    def create_endpoint_config(self, request: Mapping[str, Any]) -> None:
        """``create_endpoint_config``."""
        ...

    def create_endpoint(self, request: Mapping[str, Any]) -> None:
        """``create_endpoint``."""
        ...

    def update_endpoint(self, name: str, config_name: str) -> None:
        """``update_endpoint`` to another configuration."""
        ...

    def delete_endpoint(self, name: str) -> None:
        """``delete_endpoint``."""
        ...

    def delete_endpoint_config(self, name: str) -> None:
        """``delete_endpoint_config`` (absent: nothing)."""
        ...

    def delete_model(self, name: str) -> None:
        """``delete_model`` (absent: nothing)."""
        ...

    def list_names(self, kind: str, contains: str) -> list[str]:
        """Names of the ``kind`` (``model`` or ``endpoint_config``) resources whose name contains ``contains``."""
        ...


def _missing(err: Exception) -> bool:
    """Whether a SageMaker ClientError says the resource does not exist."""
    response = getattr(err, "response", None) or {}
    message = str(response.get("Error", {}).get("Message", "")).lower()
    return any(text in message for text in ("could not find", "does not exist", "not found"))


class SageMakerEndpointDeployment:
    """The AWS backend: a boto3 ``sagemaker`` client. Every create request is validated against botocore's
    service model first (nothing is sent when it breaks a limit); a create that races another and finds
    the resource already there counts as done; deleting what is already gone is not an error."""

    def __init__(self, sagemaker_client: Any) -> None:
        self.sm = sagemaker_client

    def _describe(self, operation: str, **kwargs: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return getattr(self.sm, operation)(**kwargs)
        except ClientError as err:
            if _missing(err):
                return None
            raise

    def _send(self, operation: str, method: str, request: Mapping[str, Any]) -> None:
        from botocore.exceptions import ClientError

        validate_request("sagemaker", operation, request, what=f"the {operation} request")
        try:
            getattr(self.sm, method)(**request)
        except ClientError as err:
            if "already exist" not in str(err.response.get("Error", {}).get("Message", "")).lower():
                raise
            log.info("%s: %s already exists", operation, next(iter(request.values())))

    def _delete(self, method: str, **kwargs: str) -> None:
        from botocore.exceptions import ClientError

        try:
            getattr(self.sm, method)(**kwargs)
        except ClientError as err:
            if not _missing(err):
                raise

    def model_exists(self, name: str) -> bool:
        """``describe_model``."""
        return self._describe("describe_model", ModelName=name) is not None

    def endpoint_config_exists(self, name: str) -> bool:
        """``describe_endpoint_config``."""
        return self._describe("describe_endpoint_config", EndpointConfigName=name) is not None

    def describe_endpoint(self, name: str) -> dict[str, Any] | None:
        """``describe_endpoint``."""
        return self._describe("describe_endpoint", EndpointName=name)

    def create_model(self, request: Mapping[str, Any]) -> None:
        """``create_model``."""
        self._send("CreateModel", "create_model", request)

    def create_endpoint_config(self, request: Mapping[str, Any]) -> None:
        """``create_endpoint_config``."""
        self._send("CreateEndpointConfig", "create_endpoint_config", request)

    def create_endpoint(self, request: Mapping[str, Any]) -> None:
        """``create_endpoint``."""
        self._send("CreateEndpoint", "create_endpoint", request)

    def update_endpoint(self, name: str, config_name: str) -> None:
        """``update_endpoint``."""
        self.sm.update_endpoint(EndpointName=name, EndpointConfigName=config_name)

    def delete_endpoint(self, name: str) -> None:
        """``delete_endpoint``."""
        self._delete("delete_endpoint", EndpointName=name)

    def delete_endpoint_config(self, name: str) -> None:
        """``delete_endpoint_config``."""
        self._delete("delete_endpoint_config", EndpointConfigName=name)

    def delete_model(self, name: str) -> None:
        """``delete_model``."""
        self._delete("delete_model", ModelName=name)

    def list_names(self, kind: str, contains: str) -> list[str]:
        """``list_models`` / ``list_endpoint_configs`` with ``NameContains``, every page."""
        method, key, item = {"model": ("list_models", "Models", "ModelName"),
                             "endpoint_config": ("list_endpoint_configs", "EndpointConfigs",
                                                 "EndpointConfigName")}[kind]
        names, token = [], None
        while True:
            kwargs: dict[str, Any] = {"NameContains": contains, "MaxResults": 100}
            if token:
                kwargs["NextToken"] = token
            page = getattr(self.sm, method)(**kwargs)
            names += [row[item] for row in page.get(key) or []]
            token = page.get("NextToken")
            if not token:
                return names


class PlannedEndpointDeployment:
    """The offline backend: nothing is deployed. Each request is validated against botocore's service model
    (local paths in ``ModelDataUrl`` and ``S3Uri`` are checked as ``s3://storyboard-local-placeholder/...``
    and listed under ``placeholders``), then appended to ``<folder>/deployment_requests.jsonl``
    (``{"operation", "request", "placeholders", "time"}``, the exact request); the state it implies
    (models, endpoint configurations, endpoints; an endpoint is ``InService`` at once) is kept in
    ``<folder>/deployment_state.json``, so the replace and delete logic runs offline too."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.requests_path = self.folder / "deployment_requests.jsonl"
        self.state_path = self.folder / "deployment_state.json"

    def _state(self) -> dict[str, Any]:
        state = json.loads(self.state_path.read_text(encoding="utf-8")) if self.state_path.exists() else {}
        for key in ("models", "endpoint_configs", "endpoints"):
            state.setdefault(key, {})
        return state

    def _record(self, operation: str, request: Mapping[str, Any], change: Any) -> None:
        checked, placeholders = _with_placeholders(request)
        validate_request("sagemaker", operation, checked, what=f"the planned {operation} request")
        rows = sio.read_jsonl(self.requests_path) if self.requests_path.exists() else []
        row = {"operation": operation, "request": dict(request), "placeholders": placeholders, "time": _now()}
        sio.write_jsonl(self.requests_path, [*rows, row])
        state = self._state()
        change(state)
        sio.write_json(self.state_path, state)

    def model_exists(self, name: str) -> bool:
        """Whether the plan holds the model."""
        return name in self._state()["models"]

    def endpoint_config_exists(self, name: str) -> bool:
        """Whether the plan holds the endpoint configuration."""
        return name in self._state()["endpoint_configs"]

    def describe_endpoint(self, name: str) -> dict[str, Any] | None:
        """The planned endpoint."""
        return self._state()["endpoints"].get(name)

    def create_model(self, request: Mapping[str, Any]) -> None:
        """Plan ``create_model``."""
        self._record("CreateModel", request, lambda s: s["models"].__setitem__(request["ModelName"], dict(request)))

    def create_endpoint_config(self, request: Mapping[str, Any]) -> None:
        """Plan ``create_endpoint_config``."""
        self._record("CreateEndpointConfig", request,
                     lambda s: s["endpoint_configs"].__setitem__(request["EndpointConfigName"], dict(request)))

    def create_endpoint(self, request: Mapping[str, Any]) -> None:
        """Plan ``create_endpoint`` (``InService`` at once)."""
        self._record("CreateEndpoint", request, lambda s: s["endpoints"].__setitem__(request["EndpointName"], {
            "EndpointName": request["EndpointName"], "EndpointConfigName": request["EndpointConfigName"],
            "EndpointStatus": "InService"}))

    def update_endpoint(self, name: str, config_name: str) -> None:
        """Plan ``update_endpoint``."""
        self._record("UpdateEndpoint", {"EndpointName": name, "EndpointConfigName": config_name},
                     lambda s: s["endpoints"][name].update(EndpointConfigName=config_name))

    def delete_endpoint(self, name: str) -> None:
        """Plan ``delete_endpoint``."""
        self._record("DeleteEndpoint", {"EndpointName": name}, lambda s: s["endpoints"].pop(name, None))

    def delete_endpoint_config(self, name: str) -> None:
        """Plan ``delete_endpoint_config``."""
        self._record("DeleteEndpointConfig", {"EndpointConfigName": name},
                     lambda s: s["endpoint_configs"].pop(name, None))

    def delete_model(self, name: str) -> None:
        """Plan ``delete_model``."""
        self._record("DeleteModel", {"ModelName": name}, lambda s: s["models"].pop(name, None))

    def list_names(self, kind: str, contains: str) -> list[str]:
        """Planned names of ``kind`` containing ``contains``."""
        return [n for n in self._state()[{"model": "models", "endpoint_config": "endpoint_configs"}[kind]]
                if contains in n]


def _with_placeholders(request: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A copy of ``request`` whose local paths under ``ModelDataUrl`` / ``S3Uri`` are placeholder S3 URIs."""
    found: list[str] = []

    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, Mapping):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, key) for v in value]
        if key in ("ModelDataUrl", "S3Uri") and isinstance(value, str) and not re.match(r"^(s3|https)://", value):
            found.append(value)
            return f"{LOCAL_PLACEHOLDER_BUCKET}/{Path(value).name or 'local'}"
        return value

    return walk(request), found
