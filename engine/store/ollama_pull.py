"""Pulling a model from an Ollama (Docker v2 style) registry into an Ollama store (:mod:`.ollama`)."""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import httpx
from tqdm import tqdm

from engine.errors import DownloadError, ModelNotFoundError
from engine.store.ollama import (
    MANIFEST_MEDIA_TYPE,
    Blob,
    OllamaModel,
    OllamaRef,
    check_file,
    layers_by_type,
    model_from_manifest,
    parse_manifest,
)

logger = logging.getLogger(__name__)
_CHUNK = 1024 * 1024
_TIMEOUT = httpx.Timeout(30.0, read=120.0)
_URL = re.compile(r"https?://\S+")


def pull(ref: OllamaRef, home: Path, base_url: str | None = None) -> OllamaModel:
    """Download ``ref`` from its registry into the Ollama store at ``home`` and return it.

    ``base_url`` defaults to ``https://<ref.registry>``. Blobs already present and valid are skipped;
    an interrupted download resumes from its ``-partial`` file. The manifest is written last, so an
    interrupted pull never looks complete. Raises :class:`ModelNotFoundError` when the registry does
    not know the model, and :class:`DownloadError` when it cannot be reached, fails, or serves a blob
    that does not match its digest. Blocking: run it in a thread from async code.
    """
    base = (base_url or f"https://{ref.registry}").rstrip("/")
    shown = _redact(base)
    repository = f"{base}/v2/{ref.namespace}/{ref.name}"
    with httpx.Client(follow_redirects=True, timeout=_TIMEOUT) as client:
        data = _fetch_manifest(client, ref, f"{repository}/manifests/{ref.tag}", shown)
        blobs = parse_manifest(data, f"the manifest of {ref} from {shown}", DownloadError)
        layers_by_type(ref, blobs)  # refuse unusable models before downloading gigabytes
        unique = list(dict.fromkeys(blobs))
        with tqdm(
            total=sum(blob.size for blob in unique), unit="B", unit_scale=True, unit_divisor=1024,
            desc=f"pulling {ref.name}:{ref.tag}", file=sys.stderr, mininterval=0.5,
        ) as bar:
            for blob in unique:
                _download_blob(client, f"{repository}/blobs/{blob.digest}", blob, home, bar, shown)
    _write_atomically(ref.manifest_path(home), data)
    logger.info("pulled %s from %s into %s", ref, shown, home)
    return model_from_manifest(ref, home, blobs, data)


def _fetch_manifest(client: httpx.Client, ref: OllamaRef, url: str, shown: str) -> bytes:
    try:
        response = client.get(url, headers={"Accept": MANIFEST_MEDIA_TYPE})
    except httpx.HTTPError as e:
        raise DownloadError(f"cannot reach the registry {shown}: {_describe(e)}") from None
    if response.status_code == 404:
        raise ModelNotFoundError(f"model {ref} was not found in the registry {shown}", param="model")
    _raise_for_status(response.status_code, f"the manifest of {ref} from {shown}")
    return response.content


def _download_blob(client: httpx.Client, url: str, blob: Blob, home: Path, bar: tqdm, shown: str) -> None:
    target = blob.path(home)
    if target.exists():
        problem = check_file(target, blob)
        if problem is None:
            bar.update(blob.size)
            return
        logger.warning("downloading blob %s again: it %s", blob.digest, problem)
        target.unlink()
    partial = target.with_name(f"{target.name}-partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    offset = partial.stat().st_size if partial.exists() else 0
    if offset > blob.size:
        partial.unlink()
        offset = 0
    bar.update(offset)
    if offset < blob.size:
        _stream_into(client, url, partial, offset, bar, f"blob {blob.digest} from {shown}")
    problem = check_file(partial, blob)
    if problem:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"blob {blob.digest} downloaded from {shown} {problem}")
    os.replace(partial, target)


def _stream_into(client: httpx.Client, url: str, partial: Path, offset: int, bar: tqdm, what: str) -> None:
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with client.stream("GET", url, headers=headers) as response:
            if response.status_code == 416:
                partial.unlink(missing_ok=True)
                raise DownloadError(f"the registry refused to resume {what}; pull again to start over")
            _raise_for_status(response.status_code, what)
            if offset and response.status_code != 206:  # Range ignored: the whole blob follows
                bar.update(-offset)
                offset = 0
            with partial.open("ab" if offset else "wb") as f:
                for chunk in response.iter_bytes(_CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
                f.flush()
                os.fsync(f.fileno())
    except httpx.HTTPError as e:
        raise DownloadError(f"downloading {what} failed: {_describe(e)}") from None


def _raise_for_status(status: int, what: str) -> None:
    if status not in (200, 206):
        refused = " (access refused; private models are not supported)" if status in (401, 403) else ""
        raise DownloadError(f"the registry answered HTTP {status} for {what}{refused}")


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def _redact(url: str) -> str:
    """The URL without credentials, query or fragment, for messages."""
    return str(httpx.URL(url).copy_with(username=None, password=None, query=None, fragment=None))


def _describe(error: httpx.HTTPError) -> str:
    # Redirect targets are often signed URLs; keep every URL out of messages.
    return f"{type(error).__name__}: {_URL.sub('<url>', str(error))}"
