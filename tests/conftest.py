"""Fixtures shared by every test: where the shared corpus lives, and fresh stores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _corpus_dir() -> Path:
    configured = os.environ.get("PSTLIB_CORPUS")
    return Path(configured) if configured else REPO.parent / "shared" / "corpus"


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The shared corpus (``../shared/corpus`` beside the checkout, or ``$PSTLIB_CORPUS``)."""
    path = _corpus_dir()
    if not (path / "pst").is_dir():
        pytest.skip(f"shared corpus not found at {path}")
    return path


@pytest.fixture(scope="session")
def pst_dir(corpus_dir: Path) -> Path:
    return corpus_dir / "pst"


@pytest.fixture(scope="session")
def mail_dir(corpus_dir: Path) -> Path:
    return corpus_dir / "mail"
