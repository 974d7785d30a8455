"""What an approval handler has done with a model package, recorded on the package itself.

The ``SageMaker Model Package State Change`` event fires on every update of a package, including the metadata the
approval handler writes, so the handler must recognise its own updates: the status whose deployment succeeded is
kept as ``ApprovalHandled`` in ``CustomerMetadataProperties``, and an event for a package whose ``ApprovalHandled``
equals its ``ModelApprovalStatus`` changes nothing. A deployment that failed is kept as ``DeploymentError`` (the
status and the error, cut to 256 characters) with ``DeploymentAttempts``; events retry it at most
``EVENT_ATTEMPTS_MAX`` times (each failure record is itself an update, hence an event), after which only the
scheduled reconciler retries it (:func:`packages_to_retry`).

Limits (SageMaker API reference ``UpdateModelPackage``): metadata values at most 256 characters, 50 entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from steps.model_registries import ModelRegistry

META_HANDLED = "ApprovalHandled"
META_ERROR = "DeploymentError"
META_ATTEMPTS = "DeploymentAttempts"
EVENT_ATTEMPTS_MAX = 3
VALUE_MAX = 256


def _metadata(package: Mapping[str, Any]) -> Mapping[str, str]:
    return package.get("CustomerMetadataProperties") or {}


def handled(package: Mapping[str, Any]) -> bool:
    """True when the package's current approval status was already deployed or cleaned up successfully."""
    status = package.get("ModelApprovalStatus")
    return status in ("Approved", "Rejected") and _metadata(package).get(META_HANDLED) == status


def attempts(package: Mapping[str, Any]) -> int:
    """How many times the current status's deployment failed (0 when it never did)."""
    raw = str(_metadata(package).get(META_ATTEMPTS) or "0")
    error = str(_metadata(package).get(META_ERROR) or "")
    return int(raw) if raw.isdigit() and error.startswith(f"{package.get('ModelApprovalStatus')}:") else 0


def skip_event_reason(package: Mapping[str, Any]) -> str | None:
    """Why an event for ``package`` changes nothing (already handled, or left to the reconciler), else ``None``."""
    if handled(package):
        return f"already handled ({package.get('ModelApprovalStatus')}): an update of the package, not a new decision"
    if attempts(package) >= EVENT_ATTEMPTS_MAX:
        return (f"deployment failed {attempts(package)} times ({_metadata(package).get(META_ERROR)}); the reconciler "
                f"retries it")
    return None


def record_success(registry: ModelRegistry, package: Mapping[str, Any]) -> None:
    """Record that the package's current status was handled (one update; none when already recorded or when the
    status is neither Approved nor Rejected)."""
    if package.get("ModelApprovalStatus") not in ("Approved", "Rejected"):
        return
    registry.update_metadata(str(package["ModelPackageArn"]), {META_HANDLED: str(package["ModelApprovalStatus"]),
                                                               META_ATTEMPTS: "0"})


def record_failure(registry: ModelRegistry, package: Mapping[str, Any], error: str) -> None:
    """Record a failed deployment of the current status, with the attempt count."""
    status = str(package.get("ModelApprovalStatus"))
    text = " ".join(f"{status}: {error}".split())
    registry.update_metadata(str(package["ModelPackageArn"]), {
        META_ERROR: text if len(text) <= VALUE_MAX else text[:VALUE_MAX - 3] + "...",
        META_ATTEMPTS: str(attempts(package) + 1)})


def packages_to_retry(sagemaker_client: Any, group: str, rejected_scan: int = 20) -> list[str]:
    """ARNs of the group's packages whose approval was not handled: the newest Approved package (the one its
    throughput or endpoint should serve; older approvals are superseded) and recent Rejected packages with a
    recorded deployment error."""
    def newest(status: str, count: int) -> list[dict[str, Any]]:
        return sagemaker_client.list_model_packages(
            ModelPackageGroupName=group, ModelApprovalStatus=status, SortBy="CreationTime", SortOrder="Descending",
            MaxResults=count).get("ModelPackageSummaryList") or []

    out = []
    for summary in newest("Approved", 1) + newest("Rejected", rejected_scan):
        package = sagemaker_client.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
        if handled(package):
            continue
        if package.get("ModelApprovalStatus") == "Approved" or _metadata(package).get(META_ERROR):
            out.append(str(package["ModelPackageArn"]))
    return out
