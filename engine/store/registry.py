"""The on-disk registries of models and adapters: one JSON file each, locked for every change,
replaced atomically.

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
from typing import Generic, TypeVar

from filelock import FileLock
from pydantic import BaseModel, ValidationError

from engine.errors import StoreError
from engine.protocol import ModelRecord

_VERSION = 1
R = TypeVar("R", bound=BaseModel)


class Registry(Generic[R]):
    """Persistent map of id -> record (by default :class:`ModelRecord`, under ``models``) at ``path``.

    Records have an ``id`` field; ``key`` names the list they are stored under in the file.
    """

    def __init__(
        self, path: Path, lock_timeout_s: float = 600.0, record: type[R] = ModelRecord,  # type: ignore[assignment]
        key: str = "models",
    ) -> None:
        self.path = path
        self._lock = FileLock(str(path) + ".lock", timeout=lock_timeout_s)
        self._record = record
        self._key = key

    def load(self) -> dict[str, R]:
        """Read the registry as it is on disk now (an absent file is an empty registry)."""
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as e:
            raise StoreError(f"model registry {self.path} is unreadable: {e}") from e
        try:
            return {m["id"]: self._record.model_validate(m) for m in raw.get(self._key, [])}
        except (ValidationError, KeyError, TypeError, AttributeError) as e:
            raise StoreError(f"model registry {self.path} is corrupt: {e}") from e

    @contextmanager
    def transaction(self) -> Iterator[dict[str, R]]:
        """Lock, yield the current records for editing, then write them back atomically.

        If the body raises, nothing is written.
        """
        with self._lock:
            records = self.load()
            yield records
            self._write(records)

    def _write(self, records: dict[str, R]) -> None:
        payload = {
            "version": _VERSION,
            self._key: [r.model_dump(mode="json") for r in sorted(records.values(), key=lambda r: r.id)],  # type: ignore[attr-defined]
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
