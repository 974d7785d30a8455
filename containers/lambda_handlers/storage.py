"""Objects by URI: ``s3://bucket/key`` through an S3 client, anything else as a local path.

The handlers read manifests and write reviewed manifests, review state and dry-run requests through
:class:`ObjectStore`, so the same code runs on AWS and against local folders. Local writes are atomic
(``core.io``); S3 ``put_object`` is atomic per object.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from core import io as sio
from core.errors import InputError
from core.io import parse_jsonl


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``("bucket", "key")`` of ``s3://bucket/key``.

    Raises:
        InputError: ``uri`` is not an ``s3://`` URI with a bucket.
    """
    if not uri.startswith("s3://"):
        raise InputError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise InputError(f"{uri!r} has no bucket")
    return bucket, key


def join_uri(base: str, *parts: str) -> str:
    """``base`` joined with ``parts`` by ``/`` (S3 URIs) or as a path (local)."""
    if base.startswith("s3://"):
        return posixpath.join(base.rstrip("/"), *[p.strip("/") for p in parts])
    return str(Path(base, *parts))


def parent_uri(uri: str) -> str:
    """The folder holding ``uri``."""
    if uri.startswith("s3://"):
        return uri.rstrip("/").rsplit("/", 1)[0]
    return str(Path(uri).parent)


@runtime_checkable
class ObjectStore(Protocol):
    """Read, write and list objects by URI."""

    def read_bytes(self, uri: str) -> bytes:
        """The object's bytes; raises :class:`InputError` when it does not exist."""
        ...

    def write_bytes(self, uri: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Write (replace) the object."""
        ...

    def exists(self, uri: str) -> bool:
        """Whether the object exists."""
        ...

    def list(self, prefix_uri: str) -> list[str]:
        """URIs of every object under ``prefix_uri`` (a folder), sorted."""
        ...

    def list_folders(self, prefix_uri: str) -> list[str]:
        """URIs of the immediate sub-folders of ``prefix_uri``, sorted."""
        ...

    def create_if_absent(self, uri: str, data: bytes, content_type: str = "application/json") -> bool:
        """Write the object only if none exists; ``False`` (nothing written) when one does."""
        ...

    def read_versioned(self, uri: str) -> tuple[bytes, str] | None:
        """The object's bytes and version tag (ETag), or ``None`` when it does not exist."""
        ...

    def replace_if_unchanged(self, uri: str, data: bytes, version: str, content_type: str = "application/json"
                             ) -> bool:
        """Replace the object only if its version tag is still ``version``; ``False`` when it changed."""
        ...


class S3Store:
    """Objects in Amazon S3."""

    def __init__(self, s3_client: Any) -> None:
        self.s3 = s3_client

    def read_bytes(self, uri: str) -> bytes:
        """``get_object``."""
        from botocore.exceptions import ClientError

        bucket, key = split_s3_uri(uri)
        try:
            return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as err:
            if err.response["Error"].get("Code") in ("NoSuchKey", "404", "NoSuchBucket"):
                raise InputError(f"{uri} does not exist") from None
            raise

    def write_bytes(self, uri: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """``put_object``."""
        bucket, key = split_s3_uri(uri)
        self.s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)

    def exists(self, uri: str) -> bool:
        """``head_object``."""
        from botocore.exceptions import ClientError

        bucket, key = split_s3_uri(uri)
        try:
            self.s3.head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as err:
            if err.response["Error"].get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def _pages(self, prefix_uri: str, delimiter: bool) -> Iterable[dict[str, Any]]:
        bucket, key = split_s3_uri(prefix_uri)
        prefix = key.rstrip("/") + "/" if key else ""
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = "/"
        yield from self.s3.get_paginator("list_objects_v2").paginate(**kwargs)

    def list(self, prefix_uri: str) -> list[str]:
        """``list_objects_v2`` (all pages)."""
        bucket, _ = split_s3_uri(prefix_uri)
        return sorted(f"s3://{bucket}/{o['Key']}" for page in self._pages(prefix_uri, False)
                      for o in page.get("Contents") or [])

    def list_folders(self, prefix_uri: str) -> list[str]:
        """``list_objects_v2`` with ``Delimiter='/'``."""
        bucket, _ = split_s3_uri(prefix_uri)
        return sorted(f"s3://{bucket}/{p['Prefix'].rstrip('/')}" for page in self._pages(prefix_uri, True)
                      for p in page.get("CommonPrefixes") or [])


    # S3 conditional writes (Amazon S3 user guide, "Conditional writes"): If-None-Match "*" creates only a missing
    # object, If-Match replaces only the version read; 412 PreconditionFailed when the condition fails, 409
    # ConditionalRequestConflict when another conditional write to the key is in flight (retry it).
    _CONDITION_FAILED = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")

    def create_if_absent(self, uri: str, data: bytes, content_type: str = "application/json") -> bool:
        """``put_object(IfNoneMatch="*")``."""
        from botocore.exceptions import ClientError

        bucket, key = split_s3_uri(uri)
        try:
            self.s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type, IfNoneMatch="*")
            return True
        except ClientError as err:
            if err.response["Error"].get("Code") in self._CONDITION_FAILED:
                return False
            raise

    def read_versioned(self, uri: str) -> tuple[bytes, str] | None:
        """``get_object``: the body and its ETag."""
        from botocore.exceptions import ClientError

        bucket, key = split_s3_uri(uri)
        try:
            got = self.s3.get_object(Bucket=bucket, Key=key)
        except ClientError as err:
            if err.response["Error"].get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return got["Body"].read(), str(got["ETag"])

    def replace_if_unchanged(self, uri: str, data: bytes, version: str, content_type: str = "application/json"
                             ) -> bool:
        """``put_object(IfMatch=version)``."""
        from botocore.exceptions import ClientError

        bucket, key = split_s3_uri(uri)
        try:
            self.s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type, IfMatch=version)
            return True
        except ClientError as err:
            if err.response["Error"].get("Code") in self._CONDITION_FAILED:
                return False
            raise


class LocalStore:
    """Objects as local files (``file://`` prefixes are accepted)."""

    @staticmethod
    def _path(uri: str) -> Path:
        if uri.startswith("s3://"):
            raise InputError(f"{uri} is in S3; the local backend reads local files only")
        return Path(uri[7:] if uri.startswith("file://") else uri)

    def read_bytes(self, uri: str) -> bytes:
        """Read the file."""
        path = self._path(uri)
        if not path.is_file():
            raise InputError(f"{uri} does not exist")
        return path.read_bytes()

    def write_bytes(self, uri: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Write the file atomically."""
        sio.write_bytes(self._path(uri), data)

    def exists(self, uri: str) -> bool:
        """Whether the file exists."""
        return self._path(uri).is_file()

    def list(self, prefix_uri: str) -> list[str]:
        """Every file under the folder, recursively."""
        root = self._path(prefix_uri)
        return sorted(str(p) for p in root.rglob("*") if p.is_file()) if root.is_dir() else []

    def list_folders(self, prefix_uri: str) -> list[str]:
        """The folder's sub-folders."""
        root = self._path(prefix_uri)
        return sorted(str(p) for p in root.iterdir() if p.is_dir()) if root.is_dir() else []

    def create_if_absent(self, uri: str, data: bytes, content_type: str = "application/json") -> bool:
        """Create the file exclusively (``O_EXCL``)."""
        path = self._path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(path, "xb") as fh:
                fh.write(data)
            return True
        except FileExistsError:
            return False

    def read_versioned(self, uri: str) -> tuple[bytes, str] | None:
        """The bytes and their SHA-256 as the version tag."""
        path = self._path(uri)
        if not path.is_file():
            return None
        data = path.read_bytes()
        return data, hashlib.sha256(data).hexdigest()

    def replace_if_unchanged(self, uri: str, data: bytes, version: str, content_type: str = "application/json"
                             ) -> bool:
        """Replace when the content's SHA-256 is still ``version`` (one process at a time, as in local runs)."""
        current = self.read_versioned(uri)
        if current is None or current[1] != version:
            return False
        sio.write_bytes(self._path(uri), data)
        return True


def store_for(uri: str, s3_client: Any = None) -> ObjectStore:
    """:class:`S3Store` for ``s3://`` URIs (``s3_client`` required), else :class:`LocalStore`."""
    if uri.startswith("s3://"):
        if s3_client is None:
            raise InputError(f"{uri} is in S3 but no S3 client was given")
        return S3Store(s3_client)
    return LocalStore()


def read_json(store: ObjectStore, uri: str) -> Any:
    """Parse a JSON object.

    Raises:
        InputError: missing or not JSON.
    """
    try:
        return json.loads(store.read_bytes(uri).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{uri} is not valid JSON ({err})") from None


def write_json(store: ObjectStore, uri: str, obj: Any) -> None:
    """Write ``obj`` as indented JSON."""
    store.write_bytes(uri, (json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n").encode("utf-8"),
                      "application/json")


def read_jsonl(store: ObjectStore, uri: str) -> list[dict[str, Any]]:
    """Parse a JSON Lines object (blank lines skipped).

    Raises:
        InputError: a line is not a JSON object; the message names the line.
    """
    return parse_jsonl(store.read_bytes(uri).decode("utf-8"), uri)


def write_jsonl(store: ObjectStore, uri: str, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write one compact JSON object per line; returns the number of lines."""
    lines = [json.dumps(dict(r), ensure_ascii=False, separators=(",", ":")) for r in rows]
    store.write_bytes(uri, ("\n".join(lines) + ("\n" if lines else "")).encode("utf-8"), "application/jsonl")
    return len(lines)
