"""The ``storyboard`` command line.

Sub-commands live in :mod:`pipeline.commands` (one module per group); each parser sets ``func``,
which receives the parsed arguments and returns the process exit code. Expected errors (bad input,
bad configuration) print one clear message and exit with status 2; they never print a traceback.

AWS access problems are handled here once for every cloud command (``start``, ``status``, ``list``,
``stop``, ``upsert``, ``approve``, ``deploy`` and any other that calls AWS): missing, partial or expired
credentials, an unknown profile, no Region, or an endpoint that cannot be reached print one line naming
the problem and the fix (``--profile``, ``aws configure``, ``AWS_PROFILE``) and exit with status 2
(:func:`aws_access_problem`).
"""

from __future__ import annotations

import argparse
import logging
import sys

from core.config import ConfigError
from core.errors import InputError
from pipeline.commands import config, deploy, evaluate, images, local, prepare, registry, sagemaker

COMMAND_MODULES = (prepare, evaluate, sagemaker, deploy, images, local, registry, config)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="storyboard",
        description="From an animated film to an approved, fine-tuned image model (a LoRA on Stable Diffusion XL, "
                    "or a Bedrock image model).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code (0 success, 1 failure, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except (InputError, ConfigError) as err:
        print(f"storyboard {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - only AWS access problems are answered here; the rest re-raise
        problem = aws_access_problem(err)
        if problem is None:
            raise
        print(f"storyboard {args.command}: error: {problem}", file=sys.stderr)
        return 2


CREDENTIAL_FIX = ("give --profile NAME, run `aws configure` (or `aws sso login`), or set AWS_PROFILE "
                  "(or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")

EXPIRED_OR_INVALID_CODES = frozenset({
    "ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired", "InvalidClientTokenId",
    "UnrecognizedClientException", "InvalidAccessKeyId", "InvalidToken", "SignatureDoesNotMatch", "AuthFailure",
    "IncompleteSignature", "MissingAuthenticationToken",
})
"""Error codes AWS services return for expired, unknown or badly signed credentials (STS, S3, SageMaker,
Bedrock, EC2 "Common errors")."""


def aws_access_problem(err: BaseException) -> str | None:
    """One line naming an AWS access problem and its fix, or ``None`` for any other error.

    Covers botocore's ``NoCredentialsError``, ``PartialCredentialsError``, ``CredentialRetrievalError``,
    ``TokenRetrievalError`` and SSO errors, ``ProfileNotFound``, ``NoRegionError``,
    ``EndpointConnectionError``/``ConnectTimeoutError``, and ``ClientError`` codes of
    :data:`EXPIRED_OR_INVALID_CODES`.
    """
    from botocore import exceptions as bx

    def flat(text: object) -> str:
        return " ".join(str(text).split())

    if isinstance(err, bx.NoCredentialsError):
        return f"no AWS credentials found; {CREDENTIAL_FIX}"
    if isinstance(err, bx.PartialCredentialsError):
        return f"incomplete AWS credentials ({flat(err)}); {CREDENTIAL_FIX}"
    if isinstance(err, bx.ProfileNotFound):
        return (f"AWS profile {err.kwargs.get('profile')!r} is not in ~/.aws/config or ~/.aws/credentials; "
                f"create it with `aws configure --profile {err.kwargs.get('profile')}`, or give --profile or "
                "AWS_PROFILE an existing profile")
    if isinstance(err, (bx.SSOError, bx.TokenRetrievalError, bx.CredentialRetrievalError)):
        return f"AWS credentials could not be loaded or have expired ({flat(err)}); {CREDENTIAL_FIX}"
    if isinstance(err, bx.NoRegionError):
        return "no AWS Region; give --region (for example us-east-1), set aws.region in pipeline.yaml or AWS_REGION"
    if isinstance(err, (bx.EndpointConnectionError, bx.ConnectTimeoutError)):
        return (f"cannot reach AWS ({flat(err)}); check the network, --region and AWS_ENDPOINT_URL, then "
                f"the credentials: {CREDENTIAL_FIX}")
    if isinstance(err, bx.ClientError):
        error = err.response.get("Error", {})
        code = error.get("Code", "")
        if code in EXPIRED_OR_INVALID_CODES:
            return f"AWS refused the credentials ({code}: {flat(error.get('Message', ''))}); {CREDENTIAL_FIX}"
    return None


if __name__ == "__main__":
    sys.exit(main())
