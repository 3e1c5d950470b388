"""The one exception type for bad input data."""
from __future__ import annotations


class DataError(ValueError):
    """A data file is unusable. The message names the file (and line) and what is wrong."""

    def __init__(self, path: str, problem: str, line: int | None = None):
        self.path, self.problem, self.line = path, problem, line
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {problem}")


def read_lines(path: str, kind: str) -> list[str]:
    """The lines of a UTF-8 text file (without line ends); an unreadable file is a DataError
    "unreadable ``kind`` file: ..." naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"unreadable {kind} file: {e}") from None
