"""Download checkpoints from the Hugging Face hub into the user's HF cache.

Only the files vLLM needs are fetched (config, tokenizer, safetensors weights; ``*.bin`` only when a
repository has no safetensors). ``huggingface_hub`` resumes interrupted downloads from its
``.incomplete`` files, shows progress bars, reads ``HF_TOKEN`` from the environment, and falls back
to the cache when the hub cannot be reached, so a model already in the user's cache is reused.
"""

from __future__ import annotations

import logging
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from engine.errors import ClientError, DownloadError, ModelNotFoundError

log = logging.getLogger(__name__)

_COMMON = [
    "*.json",
    "*.jinja",
    "tokenizer.model",
    "*.tiktoken",
    "vocab.txt",
    "merges.txt",
    "1_Pooling/*",
]


def download(repo_id: str, revision: str | None = None) -> tuple[Path, str]:
    """Fetch ``repo_id`` at ``revision``; return the snapshot directory and its commit hash."""
    path = _snapshot(repo_id, revision, [*_COMMON, "*.safetensors"])
    if not any(path.glob("*.safetensors")):
        log.info("%s has no safetensors weights; fetching *.bin", repo_id)
        path = _snapshot(repo_id, revision, [*_COMMON, "*.bin"])
    return path, path.name


def _snapshot(repo_id: str, revision: str | None, patterns: list[str]) -> Path:
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except HFValidationError as e:
        raise ClientError(f"{repo_id!r} is not a valid hub repository id: {e}", param="model") from e
    except GatedRepoError as e:
        raise ClientError(
            f"{repo_id} is gated: accept its licence on the hub and set HF_TOKEN", param="model"
        ) from e
    except RepositoryNotFoundError as e:
        raise ModelNotFoundError(
            f"{repo_id} was not found on the hub (or is private and HF_TOKEN is not set)",
            param="model",
        ) from e
    except RevisionNotFoundError as e:
        raise ModelNotFoundError(f"revision {revision!r} of {repo_id} does not exist", param="revision") from e
    except LocalEntryNotFoundError as e:
        raise DownloadError(
            f"cannot download {repo_id}: the hub is unreachable and the model is not in the local "
            "Hugging Face cache"
        ) from e
    except (HfHubHTTPError, OSError) as e:
        # The exception text can carry request headers; keep only its class name.
        raise DownloadError(
            f"download of {repo_id} failed ({type(e).__name__}); run the command again to resume"
        ) from e
