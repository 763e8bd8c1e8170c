"""pstlib's exception hierarchy.

Every error pstlib raises on purpose derives from :class:`PstlibError`. Errors about input carry the
file (and, where known, the folder and item) and the problem in structured fields, so that the scan can
record them in the store and a person can read them in one line.
"""

from __future__ import annotations


class PstlibError(Exception):
    """Base class of every error pstlib raises on purpose."""


class SourceError(PstlibError):
    """A mail source (or one item in it) could not be read.

    ``code`` is a short machine-readable kind (``not_a_pst``, ``truncated``, ``unreadable_item``, ...),
    ``cause`` the human sentence. ``str(error)`` names the file, folder and item where known.
    """

    def __init__(
        self,
        file: str,
        cause: str,
        *,
        code: str = "unreadable",
        folder: str | None = None,
        item: str | None = None,
    ) -> None:
        self.file = file
        self.cause = cause
        self.code = code
        self.folder = folder
        self.item = item
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = self.file
        if self.folder:
            where += f" [{self.folder}]"
        if self.item:
            where += f" item {self.item}"
        return f"{where}: {self.cause}"

    def __reduce__(self) -> tuple[object, ...]:  # keep picklable with keyword fields
        return (_rebuild_source_error, (self.file, self.cause, self.code, self.folder, self.item))


def _rebuild_source_error(
    file: str, cause: str, code: str, folder: str | None, item: str | None
) -> SourceError:
    return SourceError(file, cause, code=code, folder=folder, item=item)


class UnsupportedSourceError(SourceError):
    """The file is of no kind pstlib reads."""


class StoreError(PstlibError):
    """The analytics store cannot be opened or used (wrong URL, newer schema, missing session...)."""


class MissingColumnsError(PstlibError):
    """An analysis was given a DataFrame without the columns it needs."""

    def __init__(self, function: str, missing: list[str]) -> None:
        self.function = function
        self.missing = missing
        super().__init__(f"{function} needs column(s) {', '.join(missing)}")


class DataverseError(PstlibError):
    """The Dataverse Web API answered with an error.

    ``status`` is the HTTP status, ``code`` the OData error code (``0x80040217``...).
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"HTTP {status} {code}: {message}")


class ConfigError(PstlibError):
    """Settings are missing or contradictory."""
