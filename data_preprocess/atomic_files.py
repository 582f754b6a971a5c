"""Writes that a kill cannot leave half done: write beside the target under a temporary name, then rename.

`os.replace` is atomic on POSIX within one file system, so a reader (or a resumed run) sees either the old file or
the complete new one, never a truncated file that looks whole. Folders are written the same way: into a temporary
sibling folder, which then takes the target's name (the previous folder, if any, is removed only after that).
"""

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _usual_mode(path: Path, mode: int) -> None:
    """Give a `tempfile` file (0600) or folder (0700) the mode a plain `open`/`mkdir` would: `mode` less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(mode & ~umask)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside `path`; when the block ends without error, it becomes `path`.

    On an error the temporary file is removed and `path` keeps its previous content.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    temporary = Path(name)
    _usual_mode(temporary, 0o666)
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | Path, value: Any, indent: int | None = 2) -> None:
    """Write `value` as JSON (UTF-8, non-ASCII kept) to `path` atomically, with a final newline."""
    atomic_write_text(path, json.dumps(value, ensure_ascii=False, indent=indent) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; when the block ends without error, it replaces `path`.

    An existing `path` is moved aside first and deleted only once the new folder has its name, so a kill leaves
    either the old folder, the new one, or the old one under a `.old` name beside a complete new one; never a
    half-written folder under `path`. On an error the temporary folder is removed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    _usual_mode(temporary, 0o777)
    try:
        yield temporary
        if target.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            aside.rmdir()
            os.replace(target, aside)
            os.replace(temporary, target)
            shutil.rmtree(aside)
        else:
            os.replace(temporary, target)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)
