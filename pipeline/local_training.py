"""The local runner's executor for **Training** steps (DESIGN §6): a SageMaker training job on this machine.

The step's ``CreateTrainingJob`` arguments, resolved from the definition, are honoured as a training
container sees them (SageMaker developer guide, "How Amazon SageMaker Provides Training Information" and
"Use checkpoints"):

- each ``InputDataConfig`` channel (``S3Prefix`` in ``File`` mode) is linked into
  ``/opt/ml/input/data/<channel>/``: every file under the prefix, keys relative to it, or the single object
  an ``S3Uri`` names;
- ``HyperParameters`` are written, all values strings, to ``/opt/ml/input/config/hyperparameters.json``,
  the channels to ``inputdataconfig.json`` and the instance to ``resourceconfig.json``;
- the container's command (``AlgorithmSpecification.ContainerEntrypoint``, ``python3 -m <module>``) runs as
  a subprocess of this Python with ``STORYBOARD_OPT_ML`` pointing ``/opt/ml`` at ``<step>/opt_ml/`` and the
  job's ``Environment``;
- what it writes to ``/opt/ml/model/`` is packed into
  ``<S3OutputPath>/<TrainingJobName>/output/model.tar.gz``, the path SageMaker uploads to, mapped to
  ``<step>/model-output/``; ``/opt/ml/output/failure`` becomes the failure reason;
- ``/opt/ml/checkpoints/`` (``CheckpointConfig.LocalPath``) is kept between attempts, so a resumed run
  continues from the last checkpoint as a spot-interrupted job does;
- ``MetricDefinitions`` regexes are applied to the job's log: the last value of each metric is its
  ``FinalMetricDataList`` entry.

Properties: ``TrainingJobName``, ``TrainingJobArn``, ``TrainingJobStatus``, ``ModelArtifacts.S3ModelArtifacts``,
``FinalMetricDataList``, ``HyperParameters``, ``AlgorithmSpecification`` and the other request fields.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tarfile
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.io import write_json
from pipeline.expressions import to_text

log = logging.getLogger(__name__)

OPT_ML = "/opt/ml"
OPT_ML_ENV = "STORYBOARD_OPT_ML"
MODEL_OUTPUT_DIR = "model-output"
FAILURE_FILE = "output/failure"


class TrainingStepError(RuntimeError):
    """The training step cannot run, or its job failed; the message says why."""


def check_training(info_name: str, args: Mapping[str, Any]) -> None:
    """Refuse, before any step runs, a Training step the local runner cannot execute.

    Raises:
        TrainingStepError: no Python ``ContainerEntrypoint``, a channel other than ``S3Prefix`` in ``File``
            mode, or more than one instance.
    """
    where = f"step {info_name}"
    spec = args.get("AlgorithmSpecification", {})
    entry = spec.get("ContainerEntrypoint")
    if not entry or not isinstance(entry[0], str) or not re.fullmatch(r"(.*/)?python(3(\.\d+)?)?", entry[0]):
        raise TrainingStepError(f"{where}: the local runner runs Python training entry points (python3 -m "
                                f"<module>); AlgorithmSpecification.ContainerEntrypoint is {entry!r}")
    for channel in args.get("InputDataConfig", []) or []:
        s3 = channel.get("DataSource", {}).get("S3DataSource")
        if s3 is None or s3.get("S3DataType", "S3Prefix") != "S3Prefix" or \
                channel.get("InputMode", spec.get("TrainingInputMode", "File")) != "File":
            raise TrainingStepError(f"{where}: channel {channel.get('ChannelName')!r} must be an S3Prefix "
                                    "S3DataSource in File mode to run locally")
    count = args.get("ResourceConfig", {}).get("InstanceCount", 1)
    if isinstance(count, int) and count != 1:
        raise TrainingStepError(f"{where}: the local runner trains on one instance, InstanceCount is {count}")


def job_name(execution_id: str, step: str) -> str:
    """The local training job's name: ``pipelines-<execution>-<step>``, at most 63 characters."""
    return re.sub(r"[^A-Za-z0-9-]", "-", f"pipelines-{execution_id}-{step}")[:63].rstrip("-")


def final_metrics(log_text: str, definitions: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``FinalMetricDataList``: for each metric definition, the last value its regex captured in the log.

    Args:
        log_text: the job's standard output and error.
        definitions: ``[{"Name", "Regex"}]`` (the regex's first group is the value).

    Returns:
        ``[{"MetricName", "Value", "Timestamp"}]`` for the metrics seen at least once, in definition order.
    """
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    result = []
    for item in definitions:
        values = []
        for match in re.finditer(item["Regex"], log_text):
            try:
                values.append(float(match.group(1)))
            except (IndexError, ValueError):
                continue
        if values:
            result.append({"MetricName": item["Name"], "Value": values[-1], "Timestamp": now})
    return result


def _pack_model(model_dir: Path, tarball: Path) -> None:
    """``model_dir``'s files into ``tarball`` (gzip), paths relative to it, written atomically."""
    tarball.parent.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_name(tarball.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        for path in sorted(model_dir.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(model_dir)))
    os.replace(partial, tarball)


def run_training_step(step_name: str, args: Mapping[str, Any], step_dir: Path, *, execution_id: str,
                      localize: Callable[[str], str], stage: Callable[[Path, Path], int],
                      launch: Callable[[str, list[str], dict[str, str], Path, Path], int],
                      repo_root: Path, failure_text: Callable[[Path, int], str]) -> tuple[dict[str, Any], dict]:
    """Run one Training step whose ``CreateTrainingJob`` arguments ``args`` are already resolved.

    Args:
        step_name: the step's name.
        args: the resolved arguments (plain values, no expressions).
        step_dir: the step's run folder.
        execution_id: names the job (:func:`job_name`).
        localize: maps an S3 URI this run knows to its local path (unknown URIs come back unchanged).
        stage: links every file of a source path into a folder; returns the number of files.
        launch: runs the command ``(step, command, env, cwd, log_path) -> exit status``.
        repo_root: the project's root, put on ``PYTHONPATH``.
        failure_text: what the log says about a failure, from a byte offset.

    Returns:
        ``(properties, outputs)``: the step's properties (see the module docstring) and a summary for
        ``status.json`` (``model``: the local ``model.tar.gz``).

    Raises:
        TrainingStepError: a channel has no local copy, or the job exits non-zero (the reason from
            ``/opt/ml/output/failure`` or the log).
    """
    from core.errors import InputError

    check_training(step_name, args)
    root = step_dir / "opt_ml"
    for sub in ("input", "model", "output"):  # a fresh attempt; checkpoints/ is kept for resuming
        if (root / sub).exists():
            shutil.rmtree(root / sub)
    name = job_name(execution_id, step_name)
    channels = []
    for channel in args.get("InputDataConfig", []) or []:
        channel_name = channel["ChannelName"]
        uri = to_text(channel["DataSource"]["S3DataSource"]["S3Uri"])
        local = localize(uri)
        if local.startswith("s3://"):
            raise InputError(f"training channel {channel_name}: the local runner has no copy of {uri}; pass a "
                             "local path (for example --param BaseModelS3Uri=/path) or run the step that writes it")
        if not Path(local).exists():
            raise InputError(f"training channel {channel_name}: {local} does not exist")
        count = stage(Path(local), root / "input" / "data" / channel_name)
        log.info("channel %s -> %s (%d file%s)", channel_name, root / "input" / "data" / channel_name, count,
                 "" if count == 1 else "s")
        channels.append(channel_name)
    hyperparameters = {k: to_text(v) for k, v in (args.get("HyperParameters") or {}).items()}
    resource = args.get("ResourceConfig", {})
    write_json(root / "input" / "config" / "hyperparameters.json", hyperparameters)
    write_json(root / "input" / "config" / "inputdataconfig.json",
               {c: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"} for c in channels})
    write_json(root / "input" / "config" / "resourceconfig.json",
               {"current_host": "algo-1", "hosts": ["algo-1"], "current_instance_type":
                to_text(resource.get("InstanceType", "local"))})
    for sub in ("model", "output", "checkpoints"):
        (root / sub).mkdir(parents=True, exist_ok=True)

    spec = args.get("AlgorithmSpecification", {})
    entry = [to_text(v) for v in spec.get("ContainerEntrypoint", [])]
    command = [sys.executable, *entry[1:], *[to_text(v) for v in spec.get("ContainerArguments", []) or []]]
    env = dict(os.environ)
    env.update({k: to_text(v) for k, v in (args.get("Environment") or {}).items()})
    env[OPT_ML_ENV] = str(root)
    env["TRAINING_JOB_NAME"] = name
    env["PYTHONPATH"] = os.pathsep.join([str(repo_root), *filter(None, [os.environ.get("PYTHONPATH")])])
    log_path = step_dir / "step.log"
    start = log_path.stat().st_size if log_path.exists() else 0
    code = launch(step_name, command, env, repo_root, log_path)
    log_text = log_path.read_text(encoding="utf-8", errors="replace")[start:] if log_path.exists() else ""
    if code != 0:
        failure = root / FAILURE_FILE
        reason = failure.read_text(encoding="utf-8").strip() if failure.is_file() else failure_text(log_path, start)
        raise TrainingStepError(f"training job {name} exited with {code}: {reason} (log: {log_path})"[:2000])

    output_path = to_text(args.get("OutputDataConfig", {}).get("S3OutputPath", "")).rstrip("/")
    local_output = step_dir / MODEL_OUTPUT_DIR
    tarball = local_output / name / "output" / "model.tar.gz"
    _pack_model(root / "model", tarball)
    metrics = final_metrics(log_text, list(spec.get("MetricDefinitions") or []))
    properties = dict(args)
    properties.update({
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:local:000000000000:training-job/{name}",
        "TrainingJobStatus": "Completed",
        "SecondaryStatus": "Completed",
        "ModelArtifacts": {"S3ModelArtifacts": f"{output_path}/{name}/output/model.tar.gz"},
        "FinalMetricDataList": metrics,
        "_Local": {"Outputs": {output_path: str(local_output)}, "PropertyFiles": {}, "Hosts": ["algo-1"]},
    })
    summary = {"model": str(tarball), **{m["MetricName"]: m["Value"] for m in metrics}}
    log.info("training job %s: model %s; final metrics %s", name, tarball,
             json.dumps({m["MetricName"]: m["Value"] for m in metrics}))
    return properties, summary
