"""What can go wrong with an input: malformed data raises `DataFormatError`, an input or options that cannot give a
usable dataset `PreprocessingError`, and everything dropped is counted. On the command line each is one line."""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger("data_preprocess")


class PreprocessingError(ValueError):
    """The input or the options cannot give a usable dataset; the message says why and how to go on."""


class DataFormatError(PreprocessingError):
    """Malformed input; the message names the file and the 1-based line (or row, for Parquet) where it is."""

    def __init__(self, path: str | Path, line: int, reason: str, text: str | None = None, unit: str = "line") -> None:
        self.path, self.line, self.reason = str(path), line, reason
        message = f"{path}, {unit} {line}: {reason}"
        if text is not None:
            message += f": {text[:120]!r}"
        super().__init__(message)


def require_file(path: str | Path) -> Path:
    """The path as a `Path`, or `FileNotFoundError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    return path


def require_dataset_folder(path: str | Path) -> Path:
    """The path of a folder written by `python -m data_preprocess`, or `FileNotFoundError` saying how to write it."""
    path = Path(path)
    if not (path / "dataset_dict.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a dataset folder (no dataset_dict.json); write it with "
            f"`python -m data_preprocess --input FILE --output {path}`"
        )
    return path


def record_drops(dropped: Counter[str], reason: str, count: int, detail: str = "") -> None:
    """Add `count` rows dropped for `reason` to `dropped`, and log it."""
    if count:
        dropped[reason] += count
        logger.info("dropped %d rows: %s%s", count, reason, f" ({detail})" if detail else "")


def setup_cli_output() -> None:
    """Command-line runs: this package's log at INFO (others at WARNING), no progress bars."""
    import datasets

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    datasets.disable_progress_bars()


@contextlib.contextmanager
def cli_errors(prog: str) -> Iterator[None]:
    """Command-line runs: a user error (bad input or options, a missing or unwritable file, a missing optional
    package) is one line on stderr (`prog: error: ...`) and exit status 1, not a traceback."""
    try:
        yield
    except (PreprocessingError, OSError, ImportError) as error:
        message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise SystemExit(f"{prog}: error: {message}") from None


__all__ = ["DataFormatError", "PreprocessingError"]
