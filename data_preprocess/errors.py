"""What can go wrong with an input: malformed data raises `DataFormatError`, everything dropped is counted."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

logger = logging.getLogger("data_preprocess")


class DataFormatError(ValueError):
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
