"""pstlib.standin: a local Dataverse Web API (documented subset, $batch, errors, throttling)."""

from pstlib.standin.server import StandinConfig, StandinServer, run_standin

__all__ = ["StandinConfig", "StandinServer", "run_standin"]
