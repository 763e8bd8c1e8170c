"""Mail sources: PST/OST (libpff), mbox and EML (standard library), each yielding
:class:`~pstlib.models.Message` records through the one :class:`MailSource` interface.

:func:`open_source` picks the reader from a file's *content*, never its name: ``!BDN`` is a PST or
OST (told apart by the header's client magic), a leading ``From `` line an mbox, header lines
an EML.
A folder given to :func:`open_source` is read as one EML source (every ``*.eml`` below
it); :func:`discover_sources` instead expands folders into their files, one source each.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pstlib.errors import SourceError, UnsupportedSourceError
from pstlib.sources.base import MailSource, ReadResult
from pstlib.sources.eml import EmlSource, looks_like_rfc5322
from pstlib.sources.mbox import MboxSource
from pstlib.sources.pst import PST_MAGIC, PstSource

__all__ = [
    "EmlSource",
    "MailSource",
    "MboxSource",
    "PstSource",
    "ReadResult",
    "detect_kind",
    "discover_sources",
    "open_source",
]

_HEAD_BYTES = 4096


def detect_kind(path: str | Path) -> str | None:
    """``pst``, ``ost``, ``mbox`` or ``eml`` from a file's first bytes; ``None`` if none."""
    path = Path(path)
    if path.is_dir():
        return "eml"
    try:
        with path.open("rb") as handle:
            head = handle.read(_HEAD_BYTES)
    except OSError as exc:
        raise SourceError(str(path), f"cannot read: {exc}", code="unreadable") from exc
    if head[:4] == PST_MAGIC:
        return "ost" if head[8:10] == b"SO" else "pst"
    if head.startswith(b"From "):
        return "mbox"
    if looks_like_rfc5322(head):
        return "eml"
    return None


def open_source(path: str | Path) -> MailSource:
    """Open a mail file (or a folder of EML files) with the reader its content calls for.

    Raises :class:`~pstlib.errors.UnsupportedSourceError` for a file of no known kind and
    :class:`~pstlib.errors.SourceError` when the file cannot be read at all (truncated PST...).
    """
    path = Path(path)
    if not path.exists():
        raise SourceError(str(path), "no such file or folder", code="not_found")
    kind = detect_kind(path)
    if kind in ("pst", "ost"):
        return PstSource(path)
    if kind == "mbox":
        return MboxSource(path)
    if kind == "eml":
        return EmlSource(path)
    raise UnsupportedSourceError(
        str(path), "not a mail file pstlib reads (PST, OST, mbox or EML)", code="unsupported"
    )


def discover_sources(paths: Iterable[str | Path]) -> list[Path]:
    """Every file named and every file below every folder named (recursively), sorted, once each.

    Hidden files and folders (``.name``) below a folder are skipped. The kind of each file is not
    checked here: :func:`open_source` does that, and says which files it cannot read.
    """
    found: set[Path] = set()
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            found.update(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.exists():
            found.add(path)
        else:
            raise SourceError(str(path), "no such file or folder", code="not_found")
    return sorted(found)
