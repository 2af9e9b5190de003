"""Paths, credentials and atomic writes: the only module that talks to fsspec.

A product is written under a temporary name beside its final place and renamed into
place last, so a crash never leaves a store under the final name.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import uuid
from collections.abc import Callable
from typing import Any

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from echodataflow.exceptions import StorageError
from echodataflow.models.deployment import StorageOptions

log = logging.getLogger(__name__)

PARTIAL_MARK = ".partial-"

# Prefect block types and the block slug each is saved under.
_BLOCK_SLUGS = {"AWS": "aws-credentials", "S3Bucket": "s3-bucket"}


def resolve_storage_options(options: StorageOptions | None) -> dict[str, Any]:
    """Turn configured storage options into fsspec keyword arguments.

    Credentials named by a Prefect block are loaded here, inside the run, so they
    never appear in deployment parameters. The result must not be logged.

    Raises
    ------
    StorageError
        When the named block cannot be loaded.
    """
    if options is None:
        return {}
    kwargs: dict[str, Any] = dict(options.options)
    if options.anon:
        kwargs["anon"] = True
    if options.endpoint_url:
        client_kwargs = dict(kwargs.get("client_kwargs", {}))
        client_kwargs["endpoint_url"] = options.endpoint_url
        kwargs["client_kwargs"] = client_kwargs
    if options.block_name and options.block_type:
        kwargs.update(_block_credentials(options.block_type, options.block_name))
    return kwargs


def _block_credentials(block_type: str, block_name: str) -> dict[str, Any]:
    """Read a credentials block's values from the Prefect API, secrets included.

    The block document is read as data, so the block's class (prefect-aws) need
    not be installed where the run executes.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    slug = _BLOCK_SLUGS[block_type]
    try:
        with get_client(sync_client=True) as client:
            document = client.read_block_document_by_name(
                block_name, slug, include_secrets=True
            )
    except ObjectNotFound as err:
        raise StorageError(
            f"Prefect block {slug}/{block_name} does not exist; create it with "
            f"`prefect block create {slug}`"
        ) from err
    data: dict[str, Any] = dict(document.data)
    # An S3Bucket block holds its credentials in a nested block.
    credentials = data.get("credentials")
    if isinstance(credentials, dict):
        data = credentials
    values: dict[str, Any] = {}
    for field, key in (
        ("aws_access_key_id", "key"),
        ("aws_secret_access_key", "secret"),
        ("aws_session_token", "token"),
    ):
        value = data.get(field)
        if value is not None:
            secret = getattr(value, "get_secret_value", None)
            values[key] = secret() if secret else value
    return values


# botocore's "standard" retry mode retries throttling (SlowDown), 5xx answers and
# dropped or reset connections with jittered exponential backoff; s3fs retries
# timeouts and SlowDown a few more times on top. Six attempts ride out a burst of
# faults while a persistent one fails its file within about half a minute.
S3_RETRIES = {"max_attempts": 6, "mode": "standard"}


def is_s3(url: str) -> bool:
    """Return whether ``url`` is on S3 or an S3-compatible store."""
    return url.startswith(("s3://", "s3a://"))


def for_url(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """Return ``options`` with echodataflow's defaults for the storage of ``url``.

    On S3 that is the retry policy (:data:`S3_RETRIES`) unless the options set
    ``config_kwargs.retries`` themselves, and no listing cache unless anonymous.
    Pass the result to any library that opens ``url`` (xarray, echopype, zarr);
    other URLs get ``options`` unchanged.
    """
    if not is_s3(url):
        return options
    config = dict(options.get("config_kwargs") or {})
    config.setdefault("retries", dict(S3_RETRIES))
    # s3fs keeps listings per process; a long-lived worker must see new raw files
    # and other processes' products and records, so listings are never reused.
    # Anonymous access is read-only (public archives): there the listing is kept,
    # as some stores answer an anonymous HEAD with 403 but list the same sizes.
    fresh = {} if options.get("anon") else {"use_listings_cache": False}
    return {**fresh, **options, "config_kwargs": config}


def filesystem(url: str, options: dict[str, Any]) -> tuple[Any, str]:
    """Return the fsspec filesystem for ``url`` and the path inside it."""
    fs, path = url_to_fs(url, **for_url(url, options))
    return fs, str(path)


def is_local(url: str) -> bool:
    """Return whether ``url`` is on a local or mounted file system."""
    return "://" not in url or url.startswith("file://")


def join(base: str, *parts: str) -> str:
    """Join path parts onto a path or URL."""
    if "://" in base:
        scheme, rest = base.split("://", 1)
        return f"{scheme}://{posixpath.join(rest, *parts)}"
    return posixpath.join(base, *parts)


def _with_protocol(fs: Any, path: str) -> str:
    if isinstance(fs, LocalFileSystem):
        return str(path)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return f"{protocol}://{path}"


def glob(pattern: str, options: dict[str, Any]) -> list[str]:
    """Expand a glob (or a plain path) into sorted, de-duplicated full URLs.

    Raises
    ------
    StorageError
        When the location cannot be listed.
    """
    try:
        fs, path = filesystem(pattern, options)
        matches = (
            fs.glob(path)
            if fsspec.core.has_magic(path)
            else ([path] if fs.exists(path) else [])
        )
    except (OSError, ValueError) as err:
        raise StorageError(f"cannot list {pattern!r}: {err}") from err
    return sorted(
        {_with_protocol(fs, match) for match in matches if not is_hidden(match)}
    )


def is_hidden(path: str) -> bool:
    """Return whether ``path`` is echodataflow's own bookkeeping, never a product.

    Half-written stores (``.name.partial-*``) and the ledger and quality folders
    (``.edf-*``) must never be taken for sources or products, whatever the glob.
    """
    parts = path.rstrip("/").split("/")
    return any(PARTIAL_MARK in part or part.startswith(".edf-") for part in parts)


# Keys fsspec file systems use for a content identity, strongest first.
_IDENTITY_KEYS = ("ETag", "etag", "md5Hash", "crc32c")
_TIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified")


def _stamp(info: dict[str, Any]) -> str:
    for key in _IDENTITY_KEYS + _TIME_KEYS:
        if info.get(key) is not None:
            return f"{key}={info[key]}"
    return ""


def _info(fs: Any, path: str) -> dict[str, Any]:
    """Return ``fs.info(path)``, from the folder listing where HEAD is refused.

    Some object stores let anonymous clients list a public bucket but answer 403
    to a HEAD of an object in it; the listing carries the same size and ETag.
    """
    try:
        return dict(fs.info(path))
    except PermissionError:
        parent, name = posixpath.split(path.rstrip("/"))
        for item in fs.ls(parent, detail=True):
            if posixpath.basename(str(item["name"]).rstrip("/")) == name:
                return dict(item)
        raise


def fingerprint(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """Return what identifies a file's content cheaply: size and mtime, or ETag.

    A folder (a zarr store that no echodataflow stage made) is fingerprinted by
    its files' total size and their stamps, since a folder's own mtime does not
    change when a file inside it is rewritten.

    Raises
    ------
    StorageError
        When the file cannot be read.
    """
    fs, path = filesystem(url, options)
    try:
        info = _info(fs, path)
        if info.get("type") != "directory":
            return {"size": info.get("size"), "stamp": _stamp(info)}
        found = fs.find(path, detail=True)
    except (OSError, ValueError) as err:
        raise StorageError(f"cannot read {url!r}: {err}") from err
    stamps = sorted(f"{name}:{_stamp(item)}" for name, item in found.items())
    digest = hashlib.sha256("\n".join(stamps).encode()).hexdigest()[:16]
    size = sum(int(item.get("size") or 0) for item in found.values())
    return {"size": size, "stamp": f"files={len(found)} sha256={digest}"}


def fingerprints(urls: list[str], options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Fingerprint many files with one listing per folder instead of one call each.

    A survey holds thousands of files in a few folders; one ``info`` per file is a
    request per file on object storage. Entries the listing does not show as plain
    files (folders, files that vanished) fall back to :func:`fingerprint`, so the
    values are the same as file-by-file.

    Raises
    ------
    StorageError
        When a folder or a file cannot be read.
    """
    by_folder: dict[str, list[str]] = {}
    for url in dict.fromkeys(urls):
        by_folder.setdefault(posixpath.dirname(url.rstrip("/")), []).append(url)
    found: dict[str, dict[str, Any]] = {}
    for folder, members in by_folder.items():
        if len(members) == 1:
            found[members[0]] = fingerprint(members[0], options)
            continue
        fs, path = filesystem(folder, options)
        try:
            listed = {
                posixpath.basename(str(item["name"]).rstrip("/")): item
                for item in fs.ls(path, detail=True)
            }
        except (OSError, ValueError) as err:
            raise StorageError(f"cannot list {folder!r}: {err}") from err
        for url in members:
            info = listed.get(posixpath.basename(url.rstrip("/")))
            if info is None or info.get("type") != "file":
                found[url] = fingerprint(url, options)
            else:
                found[url] = {"size": info.get("size"), "stamp": _stamp(info)}
    return found


def exists(url: str, options: dict[str, Any]) -> bool:
    """Return whether anything exists at ``url``."""
    fs, path = filesystem(url, options)
    return bool(fs.exists(path))


def write_empty_store(url: str, options: dict[str, Any]) -> None:
    """Write a store that holds nothing but a marker file (a no-op step's product)."""
    fs, path = filesystem(url, options)
    if isinstance(fs, LocalFileSystem):
        fs.makedirs(path, exist_ok=True)
    # Object stores have no empty folders: the marker makes the store exist.
    fs.pipe_file(posixpath.join(path, ".edf-empty"), b"")


def remove(url: str, options: dict[str, Any]) -> None:
    """Remove a file or a store at ``url`` if it exists."""
    fs, path = filesystem(url, options)
    if fs.exists(path):
        log.debug("remove %s", url)
        fs.rm(path, recursive=True)


def read_text(url: str, options: dict[str, Any]) -> str:
    """Read a small text file."""
    fs, path = filesystem(url, options)
    with fs.open(path, "r", encoding="utf-8") as handle:
        return str(handle.read())


def write_text_atomic(url: str, text: str, options: dict[str, Any]) -> None:
    """Write a small text file so that readers see the old or the new one, whole."""
    fs, path = filesystem(url, options)
    parent = posixpath.dirname(path)
    if isinstance(fs, LocalFileSystem):
        partial = (
            f"{parent}/.{posixpath.basename(path)}{PARTIAL_MARK}{uuid.uuid4().hex}"
        )
        # Plain os calls: a run writes one record per product, and fsspec's file
        # objects cost several times more than the write itself.
        os.makedirs(parent, exist_ok=True)
        with open(partial, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(partial, path)
    else:
        # Object stores replace a key in one PUT: there is no half-written object.
        with fs.open(path, "w", encoding="utf-8") as handle:
            handle.write(text)


def commit_store(
    url: str, write: Callable[[str], None], options: dict[str, Any]
) -> None:
    """Write a store through ``write(target)`` and make it visible under ``url`` last.

    On a file system the store is written under a hidden partial name in the same
    folder and renamed into place. On object storage it is written in place; the
    ledger record written after it is what marks it done.

    Raises
    ------
    StorageError
        When the store cannot be written or moved into place.
    """
    fs, path = filesystem(url, options)
    if not isinstance(fs, LocalFileSystem):
        try:
            remove(url, options)
            write(url)
        except OSError as err:
            # Transient faults were retried already (S3_RETRIES): this one stays.
            raise StorageError(f"cannot write {url!r}: {err}") from err
        log.debug("wrote %s in place", url)
        return
    parent, name = posixpath.split(path)
    fs.makedirs(parent, exist_ok=True)
    partial = posixpath.join(parent, f".{name}{PARTIAL_MARK}{uuid.uuid4().hex}")
    try:
        write(partial)
        if fs.exists(path):
            # Move the old store aside first: a rename cannot replace a folder.
            old = f"{partial}.old"
            fs.mv(path, old, recursive=True)
            fs.mv(partial, path, recursive=True)
            fs.rm(old, recursive=True)
        else:
            fs.mv(partial, path, recursive=True)
    except OSError as err:
        raise StorageError(f"cannot commit {url!r}: {err}") from err
    finally:
        if fs.exists(partial):
            fs.rm(partial, recursive=True)
    log.debug("committed %s", url)


def put_tree(local: str, url: str, options: dict[str, Any]) -> None:
    """Upload the folder ``local`` so that its contents appear under ``url``."""
    fs, path = filesystem(url, options)
    # The trailing slash copies the folder's contents, not the folder, into path.
    fs.put(local.rstrip("/") + "/", path, recursive=True)


def _modified(item: dict[str, Any]) -> float:
    """Return a listing entry's modification time, 0 where the store gives none."""
    value = item.get("mtime")
    return float(value) if isinstance(value, int | float) else 0.0


def remove_partials(
    folder: str, options: dict[str, Any], older_than: float | None = None
) -> int:
    """Remove stores left half-written by an interrupted run; return how many.

    Looks in ``folder`` and in its ledger folder (``.edf-ledger``), whose records
    are written the same way. With ``older_than`` (a POSIX time), partial stores
    modified since are kept: the current run may be writing them.
    """
    fs, path = filesystem(folder, options)
    if not fs.exists(path):
        return 0
    partials: list[str] = []
    for where in (path, posixpath.join(path, ".edf-ledger")):
        if where != path and not fs.exists(where):
            continue
        partials.extend(
            item["name"]
            for item in fs.ls(where, detail=True)
            if PARTIAL_MARK in posixpath.basename(item["name"].rstrip("/"))
            and (older_than is None or _modified(item) < older_than)
        )
    for partial in partials:
        fs.rm(partial, recursive=True)
    return len(partials)
