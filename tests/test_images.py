"""`storyboard images build|push` with a fake `docker` on PATH (no daemon here) against a moto server's stack,
and the Lambda handlers importing without the SageMaker SDK."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_deploy import aws, moto_outputs_after_execute, write_config  # noqa: F401 - fixtures

from pipeline.commands.cli import main

REPO = Path(__file__).resolve().parents[1]
HANDLERS = ("callback_consumer", "finetune_handlers", "review_handlers", "reconciler", "register_model", "approval")


def fake_docker(tmp_path: Path) -> Path:
    """A `docker` that records its argv and standard input, one line per call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "docker.log"
    script = bin_dir / "docker"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n"
                      f"if [ \"$1\" = login ]; then echo \"stdin=$(cat)\" >> {log}; fi\n")
    script.chmod(0o755)
    return log


def test_build_and_push_every_image_into_the_stacks_repositories(aws, tmp_path, monkeypatch, capsys):  # noqa: F811
    path = write_config(tmp_path)
    assert main(["deploy", "--config", str(path), "--poll-seconds", "1"]) == 0
    log = fake_docker(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    capsys.readouterr()
    assert main(["images", "build", "--tag", "v1", "--config", str(path)]) == 0
    printed = capsys.readouterr().out
    registry = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    for name in ("processing", "training", "inference", "lambda"):
        command = f"docker build -f containers/{name}/Dockerfile -t {registry}/storyboard-{name}:v1 ."
        assert f"$ {command}" in printed
        assert command.removeprefix("docker ") in log.read_text()
    assert main(["images", "push", "--tag", "v1", "--config", str(path)]) == 0
    calls = log.read_text().splitlines()
    login = next(line for line in calls if line.startswith("login"))
    assert login.startswith("login --username AWS --password-stdin")
    assert any(line.startswith("stdin=") and len(line) > len("stdin=") for line in calls)  # password not in argv
    assert [line for line in calls if line.startswith("push")] == [
        f"push {registry}/storyboard-{name}:v1" for name in ("processing", "training", "inference", "lambda")]


def test_a_failing_docker_command_stops_and_returns_its_status(aws, tmp_path, monkeypatch):  # noqa: F811
    path = write_config(tmp_path)
    assert main(["deploy", "--config", str(path), "--poll-seconds", "1"]) == 0
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text("#!/bin/sh\nexit 3\n")
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert main(["images", "build", "--config", str(path)]) == 3


def test_lambda_handlers_do_not_import_the_sagemaker_sdk():
    code = ("import importlib, sys\n"
            f"for m in {HANDLERS!r}: importlib.import_module('containers.lambda_handlers.' + m)\n"
            "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('sagemaker', 'torch', 'cv2', 'av'))\n"
            "print(','.join(bad)); sys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def base_install_modules() -> set[str]:
    """Top-level modules of setup.py's base install (``install_requires``) and everything it pulls in, from
    this environment's distribution metadata: what the Lambda image has besides the standard library."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from test_dockerfiles import SETUP

    modules: set[str] = set(SETUP["PACKAGES"])
    seen: set[str] = set()
    todo = [Requirement(r) for r in SETUP["install_requires"]]
    while todo:
        requirement = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = requirement.name.lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        dist = metadata.distribution(requirement.name)
        for file in dist.files or ():
            top = file.parts[0]
            if top.endswith((".dist-info", ".data")) or top in ("..", "bin", "__pycache__"):
                continue
            modules.add(top.removesuffix(".py").split(".")[0])
        todo += [Requirement(r) for r in dist.requires or ()]
    return modules


def test_lambda_handlers_import_only_the_base_install():
    """Every handler module imports with nothing beyond the standard library and the base install: any other
    import fails in the subprocess, as it would in the Lambda image (containers/lambda/requirements.lock)."""
    allowed = sorted(base_install_modules())
    modules = sorted(p.stem for p in (REPO / "containers" / "lambda_handlers").glob("*.py") if p.stem != "__init__")
    code = ("import importlib, importlib.abc, sys\n"
            f"allowed = set({allowed!r}) | set(sys.stdlib_module_names)\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        top = name.split('.')[0]\n"
            "        if top not in allowed and not top.startswith('_'):\n"
            "            raise ImportError(f'{name}: not in the Lambda image (base install only)')\n"
            "sys.meta_path.insert(0, Block())\n"
            f"for m in {modules!r}: importlib.import_module('containers.lambda_handlers.' + m)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {"boto3", "botocore", "pydantic", "yaml"} <= set(allowed)
    assert not {"sagemaker", "cv2", "av", "numpy", "torch"} & set(allowed)


# Imports in the handlers' modules that the Lambda image need not satisfy, and why.
NOT_IN_LAMBDA = {
    "regex": "optional: steps.request_validation falls back to re without it",
    "torch": "steps.lora's training functions only (the handlers read its settings)",
    "transformers": "steps.lora's training functions only (the handlers read its settings)",
}


def test_every_import_in_the_handlers_modules_is_in_the_base_install():
    """Also the imports inside functions (run later, in the function, not at import time): every third-party
    module named anywhere in a project module that the handlers load is in the base install, or is listed in
    NOT_IN_LAMBDA with its reason."""
    import ast

    modules = sorted(p.stem for p in (REPO / "containers" / "lambda_handlers").glob("*.py") if p.stem != "__init__")
    # the project's own modules only: not what is installed in a .venv inside the repository (as in CI)
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}: importlib.import_module('containers.lambda_handlers.' + m)\n"
            "print(json.dumps(sorted(m.__file__ for k, m in sys.modules.items() if k.split('.')[0] in "
            f"{tuple(sorted(base_install_modules()))!r} and getattr(m, '__file__', None))))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    files = [Path(f) for f in json.loads(result.stdout)]
    files = [f for f in files if f.suffix == ".py" and f.is_relative_to(REPO) and ".venv" not in f.parts]
    assert any(f.parts[-2:] == ("steps", "request_validation.py") for f in files)
    allowed = base_install_modules() | set(sys.stdlib_module_names)
    missing: dict[str, list[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in allowed and top not in NOT_IN_LAMBDA:
                    missing.setdefault(top, []).append(str(path.relative_to(REPO)))
    assert not missing, f"imported by the handlers' modules but not in setup.py's base install: {missing}"
