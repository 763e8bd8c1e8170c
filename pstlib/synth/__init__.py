"""Seeded synthetic mailboxes with ground truth: gaps, vacations, replies and sender classes.

``synthesize(out_dir, seed=..., contacts=..., years=...)`` generates a mailbox and writes it
(``mailbox.mbox``, ``eml/``, ``truth.json``); ``generate_mailbox`` and ``write_mailbox`` are the two
halves, ``load_truth`` reads ``truth.json`` back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pstlib.errors import ConfigError
from pstlib.synth.config import GapPlan, SynthConfig
from pstlib.synth.generate import Mailbox, generate_mailbox
from pstlib.synth.truth import GroundTruth, load_truth
from pstlib.synth.write import FORMATS, SynthResult, write_mailbox

__all__ = [
    "GapPlan",
    "GroundTruth",
    "Mailbox",
    "SynthConfig",
    "SynthResult",
    "generate_mailbox",
    "load_truth",
    "synthesize",
    "write_mailbox",
]


def synthesize(
    out_dir: Path | str,
    seed: int = 0,
    contacts: int = 200,
    years: float = 2.0,
    *,
    formats: Sequence[str] = FORMATS,
    **overrides: Any,
) -> SynthResult:
    """Generate a mailbox and write it under ``out_dir``; ``overrides`` are :class:`SynthConfig`
    fields (``gaps=GapPlan(...)``, ``holiday_country="DE"``...). Raises ConfigError on an unknown
    field or a bad value."""
    known = {f.name for f in dataclasses.fields(SynthConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown synth setting(s): {', '.join(unknown)}")
    config = SynthConfig(seed=seed, contacts=contacts, years=years, **overrides)
    return write_mailbox(generate_mailbox(config), out_dir, formats)
