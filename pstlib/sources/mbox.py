"""mbox files, read front to back one message at a time.

``item_id`` is the 0-based index of the message in the file (stable: the file is read in order).
Messages are split exactly as the standard library's :class:`mailbox.mbox` splits them (see
:func:`split_mbox`), as bytes, never as text, so a non-ASCII ``From `` line or body cannot stop
the reading; each is parsed as in :mod:`pstlib.sources.eml`. The file's folder role comes from its
name (``Sent.mbox`` -> sent).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from pstlib.errors import SourceError
from pstlib.sources.base import ReadResult
from pstlib.sources.eml import WarningLog, message_from_email, parse_bytes
from pstlib.sources.folders import role_of_folder


def split_mbox(lines: Iterable[bytes]) -> Iterator[bytes]:
    """Each message of an mbox given as its lines, ``From `` line included, as bytes.

    The messages :class:`mailbox.mbox` finds (its ``get_bytes(key, from_=True)``), in one pass:
    a message starts at each line beginning ``From `` and ends before the next, less the empty
    line before it; lines before the first ``From `` line belong to no message. Why not
    :mod:`mailbox` itself: it first scans the file asking the file's position at every line (a
    system call each, 15 per message of a typical mbox), then seeks and reads each message again.
    """
    message: list[bytes] = []
    started = last_was_empty = False
    for line in lines:
        if line.startswith(b"From "):
            if started:
                yield b"".join(message[:-1] if last_was_empty else message)
            message = [line]
            started, last_was_empty = True, False
        elif started:
            message.append(line)
            last_was_empty = line == b"\n"
    if started:
        yield b"".join(message[:-1] if last_was_empty else message)


class MboxSource:
    """An mbox file as a mail source."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.kind = "mbox"
        try:
            if not self.path.is_file():
                raise SourceError(str(self.path), "no such file", code="not_found")
            self._file: BinaryIO | None = self.path.open("rb")
        except OSError as exc:
            raise SourceError(str(self.path), f"cannot open: {exc}", code="unreadable") from exc
        self._log = WarningLog(str(self.path))

    @property
    def warnings(self) -> list[SourceError]:
        """Non-fatal problems (bad dates, malformed headers, unknown charsets), first 1000."""
        return self._log.warnings

    def __iter__(self) -> Iterator[ReadResult]:
        fh = self._file
        if fh is None:
            raise SourceError(str(self.path), "source is closed", code="closed")
        source = str(self.path)
        role = role_of_folder(self.path.stem)
        fh.seek(0)
        messages = split_mbox(fh)
        index = -1
        while True:
            try:
                raw = next(messages)
            except StopIteration:
                return
            except OSError as exc:
                yield SourceError(source, f"cannot read: {exc}", code="unreadable")
                return
            index += 1
            item_id = str(index)
            try:
                unixfrom, _, data = raw.partition(b"\n")
                msg = parse_bytes(data)
                msg.set_unixfrom(unixfrom.decode("utf-8", "replace").rstrip("\r"))
                yield message_from_email(
                    msg,
                    source_path=source,
                    item_id=item_id,
                    log=self._log,
                    folder_role=role,
                    size_bytes=len(data),
                )
            except Exception as exc:  # one broken message never stops the rest
                yield SourceError(
                    source, f"unreadable message: {exc}", code="unreadable_item", item=item_id
                )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> MboxSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
