"""The on-disk registry of models: one JSON file, locked for every change, replaced atomically.

Two processes (two CLI commands, or the CLI beside a running server) may change the registry at
once: every change happens inside :meth:`Registry.transaction`, which holds an inter-process file
lock, re-reads the file, and writes a complete new file with ``os.replace`` so a crash never leaves
a half-written registry behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock
from pydantic import ValidationError

from engine.errors import StoreError
from engine.protocol import ModelRecord

_VERSION = 1


class Registry:
    """Persistent map of model id -> :class:`ModelRecord` stored at ``path``."""

    def __init__(self, path: Path, lock_timeout_s: float = 600.0) -> None:
        self.path = path
        self._lock = FileLock(str(path) + ".lock", timeout=lock_timeout_s)

    def load(self) -> dict[str, ModelRecord]:
        """Read the registry as it is on disk now (an absent file is an empty registry)."""
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as e:
            raise StoreError(f"model registry {self.path} is unreadable: {e}") from e
        try:
            return {m["id"]: ModelRecord.model_validate(m) for m in raw.get("models", [])}
        except (ValidationError, KeyError, TypeError, AttributeError) as e:
            raise StoreError(f"model registry {self.path} is corrupt: {e}") from e

    @contextmanager
    def transaction(self) -> Iterator[dict[str, ModelRecord]]:
        """Lock, yield the current records for editing, then write them back atomically.

        If the body raises, nothing is written.
        """
        with self._lock:
            records = self.load()
            yield records
            self._write(records)

    def _write(self, records: dict[str, ModelRecord]) -> None:
        payload = {
            "version": _VERSION,
            "models": [r.model_dump(mode="json") for r in sorted(records.values(), key=lambda r: r.id)],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".registry-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(payload, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
