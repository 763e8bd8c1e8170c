"""The Dataverse Web API client: messages to emails, sent in ``$batch``, within the limits."""

from pstlib.dataverse.auth import (
    ClientCredentialsTokenProvider,
    MsalTokenProvider,
    TokenProvider,
    token_provider_for,
)
from pstlib.dataverse.client import BatchRecord, DataverseClient, OperationResult
from pstlib.dataverse.mapping import EmailPayload, MappingOptions, map_message
from pstlib.dataverse.throttle import (
    AdaptiveLimits,
    ExecutionPacer,
    RetryPolicy,
    ServiceLimits,
    ThrottleEvent,
)

__all__ = [
    "AdaptiveLimits",
    "BatchRecord",
    "ClientCredentialsTokenProvider",
    "DataverseClient",
    "EmailPayload",
    "ExecutionPacer",
    "MappingOptions",
    "MsalTokenProvider",
    "OperationResult",
    "RetryPolicy",
    "ServiceLimits",
    "ThrottleEvent",
    "TokenProvider",
    "map_message",
    "token_provider_for",
]
