"""Output folders written as a whole: filled beside the target, then renamed over it (`atomic_directory`).

A kill or an error while writing leaves the previous complete folder (or none): never a half-written one that loads.
An existing folder is replaced only if this step wrote it (it holds the step's marker files); anything else is
refused, so no folder of the user's is ever replaced by mistake. Entries of a previous output that the step does not
write itself (such as `item_text.npy`, added later by `data_preprocess.text_embeddings`) can be carried over.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from .atomic_files import atomic_directory


def check_replaceable(path: Path, markers: Iterable[str], written_by: str) -> None:
    """Refuse (`FileExistsError`) an existing `path` that is a file, or a non-empty folder without all `markers`."""
    markers = tuple(markers)
    if path.is_dir() and (not any(path.iterdir()) or all((path / name).is_file() for name in markers)):
        return
    if path.exists():
        raise FileExistsError(
            f"{path} exists and is not a folder written by {written_by} (which holds {', '.join(markers)}); "
            "choose another output folder, or remove this one"
        )


def _link_or_copy(source: str, destination: str) -> None:
    """A hard link (nothing copied, the same file system), or a copy where links are not supported."""
    try:
        os.link(source, destination, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, destination, follow_symlinks=False)


def carry_over(previous: Path, new: Path, written: Iterable[str]) -> list[str]:
    """Link into `new` the entries of the folder `previous` whose names are not in `written`; returns their names."""
    if not previous.is_dir():
        return []
    written = set(written)
    names = sorted(entry.name for entry in previous.iterdir() if entry.name not in written)
    for name in names:
        source = previous / name
        if source.is_dir() and not source.is_symlink():
            shutil.copytree(source, new / name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(source), str(new / name))
    return names


@contextlib.contextmanager
def replace_folder(path: str | Path, markers: Iterable[str], written_by: str) -> Iterator[Path]:
    """Yield an empty temporary folder to fill; when the block ends without error it replaces `path` as a whole.

    `path` must be absent, empty, or a previous output of `written_by` (it holds all `markers`).
    """
    path = Path(path)
    check_replaceable(path, markers, written_by)
    with atomic_directory(path) as temporary:
        yield temporary
