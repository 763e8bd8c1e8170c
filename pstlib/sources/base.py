"""The one small interface every mail source implements, and the factory that picks one for a file.

A source is opened from a path; opening raises :class:`~pstlib.errors.SourceError` when the whole
file cannot be read (not a PST, truncated, unreadable). Iterating yields
:class:`~pstlib.models.Message` records, and a :class:`~pstlib.errors.SourceError` *instance* (not
raised) for each item that could not be read, so that one broken item never stops the rest of the
file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from pstlib.errors import SourceError
from pstlib.models import Message

ReadResult = Message | SourceError


@runtime_checkable
class MailSource(Protocol):
    path: Path
    kind: str  # pst | ost | mbox | eml

    def __iter__(self) -> Iterator[ReadResult]: ...

    def close(self) -> None: ...
