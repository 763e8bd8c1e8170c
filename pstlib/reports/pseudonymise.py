"""Pseudonymisation: people's names and addresses replaced by stable tokens for wider sharing.

A token is a keyed hash (HMAC-SHA256) of the normalised value, so the same person gets the same
token in every table, figure and file of a run, and nobody without the key can tell who it is or
test a guess:

- an address ``alex.wilber@contoso.com`` becomes ``person-3f9a2c01@contoso.com``: the local part is
  tokenised and the domain kept (organisations stay readable: internal vs external, vendors), or
  ``person-3f9a2c01@domain-7be41d0a.invalid`` with ``keep_domains=False`` (for vanity domains that
  name a person);
- a display name becomes the token of the address it belongs to where the frame holds both
  (``sender_name`` beside ``sender_address``), else ``person-<hash of the name>``;
- subjects and conversation topics become ``subject-<hash>`` (they often name people), thread and
  Message-IDs ``id-<hash>``;
- every other text column keeps its text, with any e-mail address in it replaced by its token.

The key is ``PSTLIB_PSEUDONYM_KEY`` from the environment (set it to keep tokens stable from one
run to the next); without it, :func:`run_reports <pstlib.reports.run_reports>` draws a random key
per run, so tokens agree within a run's outputs and nowhere else. The key is never a notebook
parameter, so it never lands in a report.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable, Hashable, Mapping

import pandas as pd

KEY_VARIABLE = "PSTLIB_PSEUDONYM_KEY"
TOKEN_HEX = 8
MAILBOX = "*"  # the mailbox pseudo-contact of the timeline tables stays as it is

ADDRESS_COLUMNS = frozenset(
    {"address", "address_a", "address_b", "mailbox_owner", "owner_address", "source", "target"}
)
NAME_COLUMNS = frozenset({"name", "display_name"})
NOT_NAMES = frozenset({"weekday_name", "month_name", "report_name", "table_name", "host"})
SUBJECT_COLUMNS = frozenset({"subject", "conversation_topic"})
ID_COLUMNS = frozenset({"thread_id", "internet_message_id", "in_reply_to", "references"})
EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def _role(column: Hashable) -> str | None:
    name = str(column).lower()
    if name in ADDRESS_COLUMNS or name.endswith("_address"):
        return "address"
    if name in NAME_COLUMNS or (name.endswith("_name") and name not in NOT_NAMES):
        return "name"
    if name in SUBJECT_COLUMNS:
        return "subject"
    if name in ID_COLUMNS:
        return "id"
    return None


class Pseudonymiser:
    """Replaces names, addresses and subjects by keyed-hash tokens (see the module docstring)."""

    def __init__(self, key: bytes | str, *, keep_domains: bool = True) -> None:
        raw = key.encode("utf-8") if isinstance(key, str) else key
        if not raw:
            raise ValueError("a pseudonymisation key must not be empty")
        self._key = raw
        self.keep_domains = keep_domains

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, *, keep_domains: bool = True
    ) -> Pseudonymiser:
        """The key from ``PSTLIB_PSEUDONYM_KEY``; a random one (this process only) when unset."""
        env = os.environ if environ is None else environ
        return cls(env.get(KEY_VARIABLE) or secrets.token_hex(16), keep_domains=keep_domains)

    # ------------------------------------------------------------------------------- one value
    def token(self, kind: str, value: str) -> str:
        """``<kind>-<8 hex>``: the keyed hash of the normalised (trimmed, lower-case) value."""
        digest = hmac.new(self._key, value.strip().lower().encode("utf-8"), hashlib.sha256)
        return f"{kind}-{digest.hexdigest()[:TOKEN_HEX]}"

    def address(self, value: str) -> str:
        """An address's token; the domain kept (or tokenised with ``keep_domains=False``)."""
        text = value.strip()
        if not text or text == MAILBOX:
            return text
        local, at, domain = text.rpartition("@")
        if not at:
            return self.token("person", text)
        domain = domain.lower()
        shown = domain if self.keep_domains else self.token("domain", domain) + ".invalid"
        return f"{self.token('person', f'{local}@{domain}')}@{shown}"

    def name(self, value: str) -> str:
        return self.token("person", value) if value.strip() else value

    def text(self, value: str) -> str:
        """Free text with every e-mail address in it replaced by its token."""
        return EMAIL.sub(lambda m: self.address(m.group(0)), value)

    # ------------------------------------------------------------------------------ whole columns
    def _map(self, series: pd.Series, function: Callable[[str], str]) -> pd.Series:
        """Apply ``function`` once per distinct text value (NA and non-text values kept)."""
        values = series.dropna().unique()
        mapping = {v: function(v) for v in values if isinstance(v, str)}
        if isinstance(series.dtype, pd.CategoricalDtype):
            series = series.astype("string")
        mapped = series.map(mapping)
        return mapped.where(mapped.notna(), series)

    def series(self, series: pd.Series, role: str | None = None) -> pd.Series:
        """A copy of ``series`` pseudonymised as ``role`` (address, name, subject, id, or text)."""
        role = role or _role(series.name) or "text"
        if not (
            pd.api.types.is_string_dtype(series.dtype)
            or pd.api.types.is_object_dtype(series.dtype)
            or isinstance(series.dtype, pd.CategoricalDtype)
        ):
            return series
        function: Callable[[str], str] = {
            "address": self.address,
            "name": self.name,
            "subject": lambda v: self.token("subject", v) if v.strip() else v,
            "id": lambda v: self.token("id", v) if v.strip() else v,
        }.get(role, self.text)
        return self._map(series, function)

    def frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A pseudonymised copy of ``frame``: columns by role, the index and column labels too.

        A name column beside an address column of the same prefix (``sender_name`` and
        ``sender_address``, ``name`` and ``address``) takes the address's token, so the reader sees
        one token per person.
        """
        columns = {}
        for column in frame.columns:
            role = _role(column)
            series = frame[column]
            if role == "name":
                partner = _partner_address(str(column), frame.columns)
                if partner is not None:
                    series = self._name_from_address(series, frame[partner])
                    columns[column] = series
                    continue
            columns[column] = self.series(series, role)
        result = pd.DataFrame(columns, index=frame.index)
        result.columns = pd.Index([self._label(c) for c in frame.columns])
        result.index = self._index(frame.index)
        return result

    def _name_from_address(self, names: pd.Series, addresses: pd.Series) -> pd.Series:
        tokens = self.series(addresses.astype("string"), "address").astype("string")
        person = tokens.str.partition("@")[0]
        has_name = names.astype("string").fillna("").str.strip().ne("")
        return person.where(has_name & addresses.notna(), self.series(names, "name"))

    def _label(self, label: Hashable) -> Hashable:
        return self.text(label) if isinstance(label, str) else label

    def _index(self, index: pd.Index) -> pd.Index:
        if isinstance(index, pd.MultiIndex):
            levels = [self._index(index.get_level_values(i)) for i in range(index.nlevels)]
            return pd.MultiIndex.from_arrays(levels, names=index.names)
        if pd.api.types.is_numeric_dtype(index.dtype) or pd.api.types.is_datetime64_any_dtype(
            index.dtype
        ):
            return index
        mapped = self.series(pd.Series(index, name=index.name), _role(index.name) or "text")
        result: pd.Index = pd.Index(mapped, name=index.name)
        return result


def _partner_address(column: str, columns: pd.Index) -> str | None:
    prefix = column[: -len("name")]
    candidate = f"{prefix}address"
    return candidate if candidate in columns else None
