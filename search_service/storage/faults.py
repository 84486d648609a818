"""Named points inside a durable write, where crash tests stop the process.

Storage calls its fault hook at each point; in production the hook does nothing. A crash test
passes a hook that kills the process at one chosen point, then checks what reopening the store
finds: the write order (file durable, then rows committed) is what these points probe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

FaultPoint = Literal[
    "blob_staged",  # a new file's bytes are written and fsynced under its temporary name
    "blob_stored",  # the file is renamed to its final, content-addressed path
    "rows_written",  # the rows naming it are written, the transaction not yet committed
    "committed",  # the transaction is committed; the caller has not yet acknowledged
]
FaultHook = Callable[[FaultPoint], None]


def no_faults(point: FaultPoint) -> None:
    """The production hook."""
