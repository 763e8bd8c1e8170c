"""pstlib: import Outlook PST/OST, mbox and EML mail into Dataverse, and prove the migration complete."""

import logging

from pstlib.errors import PstlibError, SourceError, StoreError
from pstlib.models import Address, Message, Recipient

__version__ = "0.1.0"
__all__ = [
    "Address",
    "Message",
    "PstlibError",
    "Recipient",
    "SourceError",
    "StoreError",
    "__version__",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
