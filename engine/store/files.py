"""Files of the store: checkpoints copied in as regular files, and owners of staging folders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from engine.errors import InvalidCheckpointError


def copy_tree(src: Path, out: Path) -> dict[str, str]:
    """Copy a checkpoint into the store as regular files only.

    A link to a file is copied as that file (hub snapshots link into their blob store); a link
    to a directory or to nothing is refused, so a copy can neither pull in a tree from elsewhere
    (a link to ``/``) nor leave a link out of the store behind.
    """
    for link in links(src):
        if link.is_dir() or not link.exists():
            raise InvalidCheckpointError(
                f"{link} links to a directory or to nothing; a checkpoint may only link to files",
                param="path",
            )
    shutil.copytree(src, out, dirs_exist_ok=True)
    return {}


def links(root: Path) -> list[Path]:
    """Every symbolic link under ``root``, without following links to directories."""
    found = []
    for folder, dirs, files in os.walk(root):  # does not follow links to directories
        found += [Path(folder, n) for n in (*dirs, *files) if Path(folder, n).is_symlink()]
    return found


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (owned by anyone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
