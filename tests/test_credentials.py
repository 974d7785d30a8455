"""Every cloud command without credentials: one line naming the problem and the fix, a non-zero exit, no
traceback. Cloud commands are found in the parser (every sub-command with a ``--profile`` option), so a new
one (``deploy``, ...) is covered as soon as it is registered."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoRegionError
from botocore.stub import Stubber

from pipeline.commands import cli
from pipeline.commands import context as cmd_context

REPO = Path(__file__).resolve().parents[1]
ROLE = "arn:aws:iam::123456789012:role/StoryboardPipeline"
PACKAGE = "arn:aws:sagemaker:us-east-1:123456789012:model-package/storyboard-characters/1"

# Arguments a command needs to reach its first AWS call (anything else runs with none).
ARGS = {"upsert": ["--role-arn", ROLE], "approve": [PACKAGE], "images": ["push"]}


def cloud_commands() -> list[str]:
    """Sub-commands that take ``--profile``: the ones that call AWS."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(name for name, p in sub.choices.items()
                  if any("--profile" in a.option_strings for a in p._actions))


def empty_environment(tmp_path: Path) -> dict[str, str]:
    """The process environment without any AWS_* variable; config and credentials files that are empty."""
    (tmp_path / "empty").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_CONFIG_FILE": str(tmp_path / "empty"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "empty"),
                "AWS_EC2_METADATA_DISABLED": "true"})  # no instance-metadata wait on a machine outside EC2
    return env


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in empty_environment(tmp_path).items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("STORYBOARD_ROLE_ARN", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./pipeline.yaml: the built-in defaults (region us-east-1)


def test_the_cloud_commands_are_found():
    assert {"upsert", "start", "status", "list", "stop", "approve", "deploy", "images"} <= set(cloud_commands())


@pytest.mark.parametrize("command", cloud_commands())
def test_cloud_command_without_credentials_prints_one_line_with_the_fix(no_credentials, command, capsys):
    code = cli.main([command, *ARGS.get(command, [])])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0
    assert lines == [f"storyboard {command}: error: no AWS credentials found; give --profile NAME, run "
                     "`aws configure` (or `aws sso login`), or set AWS_PROFILE (or AWS_ACCESS_KEY_ID and "
                     "AWS_SECRET_ACCESS_KEY)"], err


def test_console_script_prints_no_traceback(tmp_path):
    env = empty_environment(tmp_path)
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, "-m", "pipeline.commands.cli", "status"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "AWS_PROFILE" in done.stderr and "aws configure" in done.stderr and "--profile" in done.stderr


def test_unknown_profile_names_it_and_how_to_create_it(no_credentials, capsys):
    assert cli.main(["list", "--profile", "nosuch"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "AWS profile 'nosuch' is not in ~/.aws/config" in err and "aws configure --profile nosuch" in err


def test_expired_token_is_one_line(aws_env, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    client = boto3.client("sagemaker", region_name="us-east-1")
    monkeypatch.setattr(cmd_context, "sagemaker_client", lambda session, config: client)
    with Stubber(client) as stubber:
        stubber.add_client_error("list_pipeline_executions", "ExpiredTokenException",
                                 "The security token included in the request is expired", http_status_code=400)
        assert cli.main(["list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("storyboard list: error: AWS refused the credentials (ExpiredTokenException: The security token "
                   "included in the request is expired); give --profile NAME, run `aws configure` (or `aws sso "
                   "login`), or set AWS_PROFILE (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")


def test_other_access_problems_and_other_errors():
    assert "give --region" in cli.aws_access_problem(NoRegionError())
    assert "cannot reach AWS" in cli.aws_access_problem(EndpointConnectionError(endpoint_url="https://x"))
    denied = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "ListPipelineExecutions")
    assert cli.aws_access_problem(denied) is None  # not a credential problem: left to its own handling
    assert cli.aws_access_problem(ValueError("x")) is None
