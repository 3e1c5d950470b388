"""Running a ``tools/`` script: a mistake of its user (a bad path, config key or value, a corrupt
or unsafe weights file) ends it with ``error: <message>`` and exit status 1, not a traceback."""
from __future__ import annotations

import sys
from typing import Callable

from .safe_load import CorruptCheckpointError, UnsafeCheckpointError

USER_ERRORS = (FileNotFoundError, KeyError, ValueError, CorruptCheckpointError, UnsafeCheckpointError)


def run_tool(main: Callable[[], object], also: tuple[type[BaseException], ...] = ()) -> None:
    """``main()``; a :data:`USER_ERRORS` exception, or one of the types ``also`` (a tool whose
    every OSError comes from its user's files passes ``(OSError,)``), exits with its message."""
    try:
        main()
    except USER_ERRORS + also as e:
        text = e.args[0] if isinstance(e, KeyError) and e.args else e  # KeyError's str() adds quotes
        sys.exit(f"error: {text}")
