"""Refuse a LEGACY or end-of-life Bedrock model before any work, with the dates AWS returns.

Every Bedrock model the configuration names is looked up with ``bedrock`` ``GetFoundationModel``
(:func:`configured_models` lists them):

- ``captions.model_id`` when ``captions.backend`` is a Bedrock one (``nova``, ``nova-pro``);
- ``embeddings.titan_model_id`` (``embeddings.backend: titan``) or ``embeddings.nova_model_id``
  (``embeddings.backend: nova``);
- ``finetune.base_model_id`` and ``evaluation.base_model_id`` when ``finetune.backend: bedrock`` and the run
  is not a dry run (``finetune.dry_run`` / the ``DryRun`` parameter: a dry run calls neither model, so offline
  local runs of that backend need no AWS access). ``finetune.require_active_base_model: false`` lets a LEGACY
  base model through with a warning; past its end of life it is refused all the same.

``storyboard start`` and the first step's entry point (ExtractFrames) call :func:`check_configured_models`,
so a retired model fails in seconds instead of after extraction, captioning and days of human review.

Facts used (botocore ``bedrock`` service model, ``GetFoundationModel`` output, and the Bedrock user guide
"Model lifecycle"): ``modelDetails.modelLifecycle`` holds ``status`` (``ACTIVE`` | ``LEGACY``) and the
timestamps ``startOfLifeTime``, ``legacyTime``, ``publicExtendedAccessTime`` and ``endOfLifeTime``. A LEGACY
model is on its way out (new accounts may be refused, and it stops answering at end of life); after
``endOfLifeTime`` it answers nothing. Both are refused here. An ACTIVE model with a ``legacyTime`` or
``endOfLifeTime`` announced for later passes, with a warning naming the dates.

Cross-Region inference profiles: captions use an inference profile ID such as
``us.amazon.nova-2-lite-v1:0`` (on-demand Nova models are not invoked by their bare model ID).
``GetFoundationModel`` takes a *foundation model* ID or ARN, not a profile, so the geographic prefix
(:data:`INFERENCE_PROFILE_PREFIXES`: ``us.``, ``eu.``, ``apac.``, ``us-gov.``, ``jp.``, ``au.``, ``ca.``,
``global.``) is stripped and the underlying model ``amazon.nova-2-lite-v1:0`` is looked up
(:func:`foundation_model_id`). Every Region a system-defined profile routes to serves that same model ID,
so its lifecycle is the model's; ``GetInferenceProfile`` would give the same model through one more call
and one more IAM permission. Identifiers that are not foundation models (provisioned, custom or imported
model ARNs, application inference profiles) have no lifecycle of their own and are skipped with a note.

The caller needs ``bedrock:GetFoundationModel`` (the processing role in the container, the user at
``start``). Credential errors (``NoCredentialsError`` and the like) are not caught here: the command line
turns them into one line with the fix.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from core.errors import InputError

if TYPE_CHECKING:
    from core.config import AwsConfig, StoryboardConfig

log = logging.getLogger(__name__)

INFERENCE_PROFILE_PREFIXES = ("us-gov", "global", "apac", "us", "eu", "jp", "au", "ca")
"""Geographic prefixes of system-defined cross-Region inference profiles (Bedrock user guide, "Supported
Regions and models for inference profiles"); ``us-gov`` is listed before ``us`` so the longer one wins."""

CURRENT_CAPTIONS_MODEL = "us.amazon.nova-2-lite-v1:0"
CURRENT_EMBEDDINGS_MODEL = "amazon.nova-2-multimodal-embeddings-v1:0"
BEDROCK_BACKENDS_CAPTIONS = ("nova", "nova-pro")

_FOUNDATION_ARN = re.compile(r"^arn:aws(-[^:]+)?:bedrock:[a-z0-9-]*::foundation-model/(?P<id>.+)$")


class ModelLifecycleError(InputError):
    """A configured Bedrock model is LEGACY, past its end of life, or unknown in the Region."""


@dataclass(frozen=True)
class ConfiguredModel:
    """One Bedrock model the configuration names.

    Attributes:
        key: the dotted ``pipeline.yaml`` key (``captions.model_id``).
        model_id: the configured value: a model ID, an inference profile ID or an ARN.
        fix: what to set instead when the model is retired (the key and a current model).
        parameter: the pipeline parameter that overrides the key at ``start`` (``CaptionModelId``), if any.
        allow_legacy: a LEGACY model only warns (``finetune.require_active_base_model: false``).
    """

    key: str
    model_id: str
    fix: str
    parameter: str | None = None
    allow_legacy: bool = False


@dataclass(frozen=True)
class ModelLifecycle:
    """``GetFoundationModel``'s ``modelLifecycle`` for one model.

    Attributes:
        model_id: the identifier looked up (the foundation model, geo prefix stripped).
        status: ``ACTIVE`` or ``LEGACY`` (``UNKNOWN`` when AWS gave none).
        start_of_life, legacy, public_extended_access, end_of_life: the timestamps AWS returned
            (timezone-aware), ``None`` where absent.
    """

    model_id: str
    status: str
    start_of_life: datetime | None = None
    legacy: datetime | None = None
    public_extended_access: datetime | None = None
    end_of_life: datetime | None = None

    def dates(self) -> str:
        """The dates AWS returned, as ``legacyTime 2026-03-30, endOfLifeTime 2026-09-30`` (``no dates`` if none)."""
        parts = [f"{name} {value.date().isoformat()}" for name, value in (
            ("legacyTime", self.legacy), ("publicExtendedAccessTime", self.public_extended_access),
            ("endOfLifeTime", self.end_of_life)) if value is not None]
        return ", ".join(parts) or "no lifecycle dates returned"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (ISO 8601 timestamps)."""
        return {"modelId": self.model_id, "status": self.status,
                **{k: v.isoformat() for k, v in (("startOfLifeTime", self.start_of_life), ("legacyTime", self.legacy),
                                                  ("publicExtendedAccessTime", self.public_extended_access),
                                                  ("endOfLifeTime", self.end_of_life)) if v is not None}}


def foundation_model_id(model_id: str) -> str | None:
    """The foundation model ID ``GetFoundationModel`` takes for a configured identifier.

    ``us.amazon.nova-2-lite-v1:0`` -> ``amazon.nova-2-lite-v1:0`` (geo prefix of a cross-Region inference
    profile stripped); a bare ID is returned as is; ``arn:...:foundation-model/<id>`` -> ``<id>``. Other ARNs
    (provisioned, custom, imported models, application inference profiles) give ``None``: they have no
    foundation-model lifecycle of their own.
    """
    model_id = model_id.strip()
    match = _FOUNDATION_ARN.match(model_id)
    if match:
        return match["id"]
    if model_id.startswith("arn:"):
        return None
    head, _, rest = model_id.partition(".")
    if head in INFERENCE_PROFILE_PREFIXES and rest.count(".") >= 1:
        return rest
    return model_id


def configured_models(config: StoryboardConfig, overrides: Mapping[str, Any] | None = None) -> list[ConfiguredModel]:
    """The Bedrock models ``config`` will call, with ``overrides`` (dotted key -> value) applied.

    Args:
        config: the validated configuration.
        overrides: values replacing configured ones, keyed by dotted key (``{"captions.model_id": ...}``),
            for example the pipeline parameters given to ``storyboard start``; other keys are ignored.
    """
    values = dict(overrides or {})

    def value(key: str, default: str) -> str:
        got = values.get(key)
        return str(got) if got not in (None, "") else default

    models: list[ConfiguredModel] = []
    if config.captions.backend in BEDROCK_BACKENDS_CAPTIONS:
        models.append(ConfiguredModel("captions.model_id", value("captions.model_id", config.captions.model_id),
                                      f"set captions.model_id (pipeline parameter CaptionModelId) to "
                                      f"{CURRENT_CAPTIONS_MODEL}", "CaptionModelId"))
    backend = config.embeddings.backend
    if backend == "titan":
        models.append(ConfiguredModel(
            "embeddings.titan_model_id", value("embeddings.titan_model_id", config.embeddings.titan_model_id),
            f"set embeddings.backend: nova (embeddings.nova_model_id {CURRENT_EMBEDDINGS_MODEL}, us-east-1), or "
            f"embeddings.backend: local", "EmbeddingModelId"))
    elif backend == "nova":
        models.append(ConfiguredModel("embeddings.nova_model_id",
                                      value("embeddings.nova_model_id", config.embeddings.nova_model_id),
                                      f"set embeddings.nova_model_id to {CURRENT_EMBEDDINGS_MODEL}, or "
                                      f"embeddings.backend: local"))
    dry_run = str(values.get("finetune.dry_run", config.finetune.dry_run)).strip().lower() in ("true", "1")
    if config.finetune.backend == "bedrock" and not dry_run:
        allow_legacy = not config.finetune.require_active_base_model
        fix = ("set finetune.backend: sagemaker (a LoRA on Stable Diffusion XL), or finetune.base_model_id "
               "(pipeline parameter BaseModelId) and evaluation.base_model_id to an ACTIVE Bedrock image model "
               "that accepts customization")
        models.append(ConfiguredModel("finetune.base_model_id",
                                      value("finetune.base_model_id", config.finetune.base_model_id), fix,
                                      "BaseModelId", allow_legacy))
        models.append(ConfiguredModel("evaluation.base_model_id",
                                      value("evaluation.base_model_id", config.evaluation.base_model_id), fix,
                                      allow_legacy=allow_legacy))
    return models


def _timestamp(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def describe_lifecycle(bedrock: Any, model_id: str, region: str | None = None) -> ModelLifecycle:
    """``GetFoundationModel(modelIdentifier=model_id)`` reduced to its ``modelLifecycle``.

    Args:
        bedrock: a ``bedrock`` (control plane) client.
        model_id: a foundation model ID or ARN (see :func:`foundation_model_id`).
        region: named in messages (default: the client's Region).

    Raises:
        ModelLifecycleError: the model does not exist in the Region (``ResourceNotFoundException`` or
            ``ValidationException``), or the caller lacks ``bedrock:GetFoundationModel``.
        botocore.exceptions.ClientError: any other refusal (throttling survives botocore's retries).
    """
    from botocore.exceptions import ClientError

    region = region or getattr(getattr(bedrock, "meta", None), "region_name", None) or "this Region"
    try:
        details = bedrock.get_foundation_model(modelIdentifier=model_id)["modelDetails"]
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        message = err.response.get("Error", {}).get("Message", "")
        if code in ("ResourceNotFoundException", "ValidationException"):
            raise ModelLifecycleError(f"Bedrock has no foundation model {model_id!r} in {region} ({code}: {message})"
                                      ) from None
        if code == "AccessDeniedException":
            raise ModelLifecycleError(f"cannot check the lifecycle of {model_id!r}: AccessDeniedException ({message});"
                                      f" grant bedrock:GetFoundationModel to this role or user") from None
        raise
    lifecycle = details.get("modelLifecycle") or {}
    return ModelLifecycle(
        model_id=model_id, status=str(lifecycle.get("status") or "UNKNOWN"),
        start_of_life=_timestamp(lifecycle.get("startOfLifeTime")), legacy=_timestamp(lifecycle.get("legacyTime")),
        public_extended_access=_timestamp(lifecycle.get("publicExtendedAccessTime")),
        end_of_life=_timestamp(lifecycle.get("endOfLifeTime")))


def lifecycle_problem(model: ConfiguredModel, lifecycle: ModelLifecycle, now: datetime) -> str | None:
    """Why ``model`` must not be used (LEGACY, or ``now`` past ``endOfLifeTime``), or ``None`` if it may."""
    looked_up = "" if lifecycle.model_id == model.model_id else f" (looked up as {lifecycle.model_id})"
    if lifecycle.end_of_life is not None and now >= lifecycle.end_of_life:
        state = "past its end of life"
    elif lifecycle.status == "LEGACY" and not model.allow_legacy:
        state = "LEGACY"
    else:
        return None
    return f"{model.key} {model.model_id}{looked_up} is {state} ({lifecycle.dates()}); fix: {model.fix}"


def check_models(models: list[ConfiguredModel], bedrock: Any, now: datetime | None = None,
                 region: str | None = None) -> dict[str, ModelLifecycle]:
    """Look up every model once and refuse retired ones, before any work.

    Returns:
        ``{foundation model ID: ModelLifecycle}`` of the models checked (skipped ARNs are absent).

    Raises:
        ModelLifecycleError: one or more models are LEGACY, past ``endOfLifeTime`` or unknown; the message
            lists each with the dates AWS returned and the key to change.
    """
    now = now or datetime.now(timezone.utc)
    seen: dict[str, ModelLifecycle] = {}
    problems: list[str] = []
    for model in models:
        lookup = foundation_model_id(model.model_id)
        if lookup is None:
            log.info("%s %s is not a foundation model (provisioned, custom or application profile); "
                     "its lifecycle is not checked", model.key, model.model_id)
            continue
        if lookup not in seen:
            try:
                seen[lookup] = describe_lifecycle(bedrock, lookup, region)
            except ModelLifecycleError as err:
                problems.append(f"{model.key} {model.model_id}: {err}; fix: {model.fix}")
                continue
        lifecycle = seen[lookup]
        problem = lifecycle_problem(model, lifecycle, now)
        if problem:
            problems.append(problem)
        elif lifecycle.legacy is not None or lifecycle.end_of_life is not None:
            log.warning("%s %s is %s but retirement is announced (%s); plan the move: %s",
                        model.key, model.model_id, lifecycle.status, lifecycle.dates(), model.fix)
    if problems:
        listed = "\n  - ".join(problems)
        raise ModelLifecycleError(f"{len(problems)} configured Bedrock model(s) cannot be used:\n  - {listed}")
    return seen


def check_configured_models(config: StoryboardConfig, bedrock: Any = None, overrides: Mapping[str, Any] | None = None,
                            aws: AwsConfig | None = None, now: datetime | None = None) -> dict[str, ModelLifecycle]:
    """:func:`check_models` on :func:`configured_models`; no client is built and no call made when the
    configuration names no Bedrock model (the offline defaults).

    Args:
        config: the validated configuration.
        bedrock: a ``bedrock`` client; default :func:`core.aws.client_from_config` with ``aws``
            (else ``config.aws``).
        overrides: dotted key -> value (pipeline parameters given at ``start``).
        now: the time compared with ``endOfLifeTime`` (default: now, UTC).

    Raises:
        ModelLifecycleError: as :func:`check_models`.
    """
    models = configured_models(config, overrides)
    if not models:
        return {}
    if bedrock is None:
        from core.aws import client_from_config

        bedrock = client_from_config("bedrock", aws or config.aws)
    region = getattr(getattr(bedrock, "meta", None), "region_name", None)
    return check_models(models, bedrock, now=now, region=region)
