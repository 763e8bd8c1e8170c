"""pstlib: import Outlook PST/OST, mbox and EML mail into Dataverse, and prove the migration complete."""

import importlib
import logging
from typing import Any

from pstlib.errors import PstlibError, SourceError, StoreError
from pstlib.models import Address, Message, Recipient

__version__ = "0.1.0"

# the public entry points, imported on first use (pandas, libpff and papermill are heavy to load)
_LAZY = {
    "Store": "pstlib.store",
    "open_source": "pstlib.sources",
    "scan": "pstlib.importer.session",
    "import_mail": "pstlib.importer.run",
    "ImportOptions": "pstlib.importer.run",
    "run_reports": "pstlib.reports",
    "synthesize": "pstlib.synth",
}

__all__ = [
    "Address", "ImportOptions", "Message", "PstlibError", "Recipient", "SourceError", "Store",
    "StoreError", "__version__", "import_mail", "open_source", "run_reports", "scan", "synthesize",
]  # fmt: skip

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pstlib' has no attribute {name!r}")
