"""Processing steps run locally: the container entry point as a subprocess of this Python, once per instance,
with ``/opt/ml/processing`` mapped into the step's run folder, inputs linked in (sharded when asked), the
instances' outputs merged and the property files checked (:class:`ProcessingExecutor`, mixed into
:class:`pipeline.local_runner.LocalRunner`); the file helpers the Training step uses too.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from core.io import write_json
from pipeline.expressions import to_text
from pipeline.local_definition import PROCESSING_ROOT, StepInfo
from pipeline.local_status import StepFailure

log = logging.getLogger("pipeline.local_runner")  # the runner's logger: its runner.log holds these lines

PROCESSING_ROOT_ENV = "STORYBOARD_PROCESSING_ROOT"
RESOURCE_CONFIG_ENV = "STORYBOARD_RESOURCE_CONFIG"
TQDM_INTERVAL_ENV = "TQDM_MININTERVAL"  # tqdm (>= 4.66) reads its arguments' defaults from TQDM_* variables
REPO_ROOT = Path(__file__).resolve().parents[1]


class ProcessingLauncher(Protocol):
    """Runs one instance of a processing container entry point.

    ``command`` is the entry point plus arguments with ``python3`` replaced by this interpreter; the
    process runs in ``cwd`` with ``env``; its output goes to ``log_path`` (appended). Returns the exit code.
    """

    def __call__(self, step_name: str, command: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> int: ...


def subprocess_launcher(step_name: str, command: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> int:
    """The default :class:`ProcessingLauncher`: a subprocess whose stdout and stderr go to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT)
        try:
            return process.wait()
        except BaseException:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
            raise


class ProcessingExecutor:
    """The Processing step type; uses the runner's ``_context``, ``localize``, ``launcher`` and ``execution_id``."""

    def _processing(self, info: StepInfo, step_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        args = self._context().evaluate(info.spec.get("Arguments", {}))
        cluster = args.get("ProcessingResources", {}).get("ClusterConfig", {})
        count = int(cluster.get("InstanceCount", 1))
        if count < 1:
            raise StepFailure(f"InstanceCount must be at least 1, got {count}")
        hosts = [f"algo-{i + 1}" for i in range(count)]
        roots = {host: (step_dir if count == 1 else step_dir / host) for host in hosts}
        # A fresh attempt: remove what an earlier attempt left.
        for sub in ("input", "output", "logs", *hosts):
            if (step_dir / sub).exists():
                shutil.rmtree(step_dir / sub)

        outputs = args.get("ProcessingOutputConfig", {}).get("Outputs", [])
        local_outputs = {}
        output_dirs: dict[str, Path] = {}
        for item in outputs:
            rel = _container_relative(item["S3Output"]["LocalPath"])
            output_dirs[item["OutputName"]] = step_dir / rel
            local_outputs[to_text(item["S3Output"]["S3Uri"])] = str(step_dir / rel)
        extra = dict(local_outputs)

        def map_arg(value: Any) -> str:
            text = to_text(value)
            if text.startswith(PROCESSING_ROOT):
                return text  # rewritten per host below
            return self.localize(text, extra)

        app = args.get("AppSpecification", {})
        entry = [to_text(v) for v in app.get("ContainerEntrypoint", [])]
        container_args = [map_arg(v) for v in app.get("ContainerArguments", []) or []]
        env_base = {k: to_text(v) for k, v in (args.get("Environment") or {}).items()}

        for item in args.get("ProcessingInputs", []):
            self._stage_input(item, roots, hosts, extra)

        codes: dict[str, int] = {}
        log_starts: dict[str, int] = {}
        for host in hosts:
            root = roots[host]
            for rel in (_container_relative(o["S3Output"]["LocalPath"]) for o in outputs):
                (root / rel).mkdir(parents=True, exist_ok=True)
            resource_config = root / "resourceconfig.json"
            write_json(resource_config, {"current_host": host, "hosts": hosts})
            env = dict(os.environ)
            env.update(env_base)
            env.setdefault(TQDM_INTERVAL_ENV, "5")  # a step's tqdm bar writes to a log file: every 5 s is enough
            env[PROCESSING_ROOT_ENV] = str(root)
            env[RESOURCE_CONFIG_ENV] = str(resource_config)
            env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
            command = [sys.executable, *entry[1:], *container_args]
            command = [str(root) + c[len(PROCESSING_ROOT):] if c.startswith(PROCESSING_ROOT) else c for c in command]
            log_path = step_dir / "step.log" if count == 1 else step_dir / "logs" / f"{host}.log"
            log_starts[host] = log_path.stat().st_size if log_path.exists() else 0
            codes[host] = self.launcher(info.name, command, env, REPO_ROOT, log_path)
        bad = {h: c for h, c in codes.items() if c != 0}
        if bad:
            reasons = []
            for host in bad:
                log_path = step_dir / "step.log" if count == 1 else step_dir / "logs" / f"{host}.log"
                reasons.append(f"{host} exited with {bad[host]}: {_failure_text(log_path, log_starts[host])}")
            raise StepFailure(f"{' | '.join(reasons)} (log: {log_path})"[:2000])
        if count > 1:
            for item in outputs:
                rel = _container_relative(item["S3Output"]["LocalPath"])
                for host in hosts:
                    _merge_tree(roots[host] / rel, step_dir / rel)
        property_files = {}
        for pf in info.spec.get("PropertyFiles", []) or []:
            path = output_dirs[pf["OutputName"]] / pf["FilePath"]
            if not path.is_file():
                raise StepFailure(f"property file {pf['PropertyFileName']} was not written: the entry point "
                                  f"wrote no {pf['FilePath']} in output {pf['OutputName']} ({path})")
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise StepFailure(f"property file {pf['PropertyFileName']} ({path}) is not JSON: {err}") from None
            property_files[pf["PropertyFileName"]] = str(path)
        properties = dict(args)
        properties.update({
            "ProcessingJobName": f"pipelines-{self.execution_id}-{info.name}"[:63],
            "ProcessingJobStatus": "Completed",
            "ProcessingJobArn": f"arn:aws:sagemaker:local:000000000000:processing-job/{self.execution_id}-{info.name}",
            "_Local": {"Outputs": local_outputs, "PropertyFiles": property_files, "Hosts": hosts},
        })
        outputs_summary = {name: str(path) for name, path in output_dirs.items()}
        return properties, outputs_summary

    def _stage_input(self, item: Mapping[str, Any], roots: Mapping[str, Path], hosts: list[str],
                     extra: Mapping[str, str]) -> None:
        from core.errors import InputError

        s3 = item["S3Input"]
        name = item.get("InputName")
        uri = to_text(s3["S3Uri"])
        local = self.localize(uri, extra)
        if local.startswith("s3://"):
            raise InputError(f"input {name}: the local runner has no copy of {uri}; pass a local path instead "
                             f"(for example --param <Parameter>=/path) or run the step that writes it")
        source = Path(local).expanduser()
        if not source.exists():
            raise InputError(f"input {name}: {source} does not exist")
        rel = _container_relative(s3["LocalPath"])
        files = _list_files(source)
        sharded = s3.get("S3DataDistributionType") == "ShardedByS3Key" and len(hosts) > 1
        for index, host in enumerate(hosts):
            dest = roots[host] / rel
            dest.mkdir(parents=True, exist_ok=True)
            chosen = files[index::len(hosts)] if sharded else files
            for rel_file, path in chosen:
                _link(path, dest / rel_file)
            log.info("input %s -> %s (%d file%s%s)", name, dest, len(chosen), "" if len(chosen) == 1 else "s",
                     f", shard {index + 1} of {len(hosts)}" if sharded else "")


def _container_relative(local_path: str) -> Path:
    rel = local_path[len(PROCESSING_ROOT):].strip("/")
    return Path(rel)


def _list_files(source: Path) -> list[tuple[Path, Path]]:
    """Files under ``source`` as (path relative to the input folder, absolute path), sorted by key."""
    if source.is_file():
        return [(Path(source.name), source.resolve())]
    files = []
    for folder, dirs, names in os.walk(source, followlinks=True):  # linked folders count, as S3 prefixes do
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            path = Path(folder) / name
            if not name.startswith(".") and path.is_file():
                files.append((path.relative_to(source), path.resolve()))
    return sorted(files)


def _link(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() or dest.is_symlink():
        dest.unlink()
    try:
        os.symlink(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def _merge_tree(source: Path, dest: Path) -> None:
    """Copy every file of ``source`` into ``dest``; two instances writing one key is an error."""
    if not source.exists():
        return
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        target = dest / path.relative_to(source)
        if target.exists():
            raise StepFailure(f"two instances wrote the same output file {target.relative_to(dest)}; "
                              "an entry point must write under a folder named after its host")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def _failure_text(path: Path, start: int = 0, lines: int = 6) -> str:
    """What the entry point said before it failed: its ``error:`` line(s) (bad input, printed by
    ``containers.processing.common.run_main``), else the last lines it wrote (a traceback's end)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            handle.seek(start if start <= path.stat().st_size else 0)
            text = [line.strip() for line in handle.read().splitlines()
                    if line.strip() and not line.startswith("$ ")]  # "$ <command>": the launcher's own line
    except FileNotFoundError:
        return "(no log)"
    errors = [line for line in text if line.startswith("error:")]
    return " / ".join(errors or text[-lines:]) or "(no output)"
