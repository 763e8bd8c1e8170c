"""mbox files read with the standard library's :mod:`mailbox`, one message at a time.

``item_id`` is the 0-based index of the message in the file (stable: the file is read in order).
Messages are fetched as bytes (``get_bytes``), never as text, so a non-ASCII ``From `` line or body
cannot stop the reading; each is parsed as in :mod:`pstlib.sources.eml`. The file's folder role
comes from its name (``Sent.mbox`` -> sent).
"""

from __future__ import annotations

import mailbox
from collections.abc import Iterator
from pathlib import Path

from pstlib.errors import SourceError
from pstlib.sources.base import ReadResult
from pstlib.sources.eml import WarningLog, message_from_email, parse_bytes
from pstlib.sources.folders import role_of_folder


class MboxSource:
    """An mbox file as a mail source."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.kind = "mbox"
        try:
            if not self.path.is_file():
                raise SourceError(str(self.path), "no such file", code="not_found")
            self._mbox: mailbox.mbox | None = mailbox.mbox(self.path, create=False)
        except OSError as exc:
            raise SourceError(str(self.path), f"cannot open: {exc}", code="unreadable") from exc
        self._log = WarningLog(str(self.path))

    @property
    def warnings(self) -> list[SourceError]:
        """Non-fatal problems (bad dates, malformed headers, unknown charsets), first 1000."""
        return self._log.warnings

    def __iter__(self) -> Iterator[ReadResult]:
        box = self._mbox
        if box is None:
            raise SourceError(str(self.path), "source is closed", code="closed")
        source = str(self.path)
        role = role_of_folder(self.path.stem)
        try:
            keys = box.keys()  # builds the table of message offsets: one scan, no message kept
        except OSError as exc:
            raise SourceError(source, f"cannot read: {exc}", code="unreadable") from exc
        for index, key in enumerate(keys):
            item_id = str(index)
            try:
                raw = box.get_bytes(key, from_=True)
                unixfrom, _, data = raw.partition(b"\n")
                if not unixfrom.startswith(b"From "):
                    unixfrom, data = b"", raw
                msg = parse_bytes(data)
                if unixfrom:
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
        if self._mbox is not None:
            self._mbox.close()
            self._mbox = None

    def __enter__(self) -> MboxSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
