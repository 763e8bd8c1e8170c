"""Contacts: who a message's correspondents are in Dataverse, and which ones to create.

Every correspondent address (sender and recipients, never the mailbox owner) is looked up by
``emailaddress1``. Addresses no contact has are created, or not, under a :class:`ContactPolicy`:

* ``create``: ``all`` correspondents, ``external`` domains only (the default), or ``never``;
* ``internal_domains`` (plus the mailbox owner's own domain) are *internal*;
* ``deny_domains`` are never created; a non-empty ``allow_domains`` limits creation to those.

A domain rule matches the domain itself and its subdomains (``example.com`` covers
``mail.example.com``). Every address's fate is reported once per session as ``matched``,
``created``, ``failed`` or ``skipped`` (with why) through the ``on_contact`` hook.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from pstlib.errors import ConfigError, DataverseError
from pstlib.models import Address, Message

log = logging.getLogger(__name__)


class CreateContacts(StrEnum):
    """Which correspondents without a contact get one."""

    ALL = "all"
    EXTERNAL = "external"
    NEVER = "never"


def _domains(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.strip().lower().lstrip("@").lstrip(".") for v in values if v.strip())


def domain_matches(domain: str, rules: Iterable[str]) -> bool:
    """``domain`` is one of ``rules`` or a subdomain of one (all lower-case)."""
    return any(domain == rule or domain.endswith("." + rule) for rule in rules)


@dataclass(frozen=True, slots=True)
class ContactDecision:
    create: bool
    reason: str


@dataclass(frozen=True, slots=True)
class ContactPolicy:
    """When to create a contact for an address Dataverse does not know."""

    create: CreateContacts = CreateContacts.EXTERNAL
    allow_domains: frozenset[str] = field(default_factory=frozenset)
    deny_domains: frozenset[str] = field(default_factory=frozenset)
    internal_domains: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "create", CreateContacts(self.create))
        except ValueError as err:
            valid = ", ".join(c.value for c in CreateContacts)
            raise ConfigError(f"unknown contact policy {self.create!r} (valid: {valid})") from err
        for name in ("allow_domains", "deny_domains", "internal_domains"):
            object.__setattr__(self, name, _domains(getattr(self, name)))

    def internal(self, owner: str | None) -> frozenset[str]:
        """The internal domains: the configured ones and the mailbox owner's own."""
        own = owner.strip().lower().rpartition("@")[2] if owner and "@" in owner else ""
        return self.internal_domains | ({own} if own else set())

    def decide(self, address: str, owner: str | None = None) -> ContactDecision:
        """Whether to create a contact for ``address`` (not found in Dataverse), and why."""
        norm = address.strip().lower()
        domain = norm.rpartition("@")[2] if "@" in norm else ""
        if not domain:
            return ContactDecision(False, "not an SMTP address")
        if owner and norm == owner.strip().lower():
            return ContactDecision(False, "the mailbox owner")
        if self.create is CreateContacts.NEVER:
            return ContactDecision(False, "policy: never create")
        if domain_matches(domain, self.deny_domains):
            return ContactDecision(False, f"policy: domain {domain} denied")
        if self.allow_domains and not domain_matches(domain, self.allow_domains):
            return ContactDecision(False, f"policy: domain {domain} not allowed")
        if self.create is CreateContacts.EXTERNAL and domain_matches(domain, self.internal(owner)):
            return ContactDecision(False, f"policy: internal domain {domain}")
        return ContactDecision(True, f"policy: create {self.create.value}")


def correspondents(message: Message, owner: str | None = None) -> list[Address]:
    """Sender and recipients with an address, each once, without the mailbox owner."""
    own = owner.strip().lower() if owner else ""
    seen: set[str] = set()
    found: list[Address] = []
    candidates = [message.sender] if message.sender else []
    candidates.extend(r.address for r in message.recipients)
    for address in candidates:
        norm = address.address.strip().lower()
        if norm and norm != own and norm not in seen:
            seen.add(norm)
            found.append(address)
    return found


def regarding_address(message: Message, owner: str | None, outgoing: bool) -> str | None:
    """Whom a message is about: an incoming one's sender, an outgoing one's first recipient."""
    people = correspondents(message, owner)
    if not outgoing:
        sender = message.sender.address.strip().lower() if message.sender else ""
        return sender if sender and any(p.address == sender for p in people) else None
    for recipient in message.recipients:
        norm = recipient.address.address.strip().lower()
        if norm and norm != (owner or "").strip().lower():
            return norm
    return None


class ContactHook(Protocol):
    def __call__(
        self,
        address: str,
        action: str,
        *,
        name: str | None = None,
        detail: str | None = None,
        dataverse_id: str | None = None,
    ) -> None: ...


class ContactDirectory(Protocol):
    """What :class:`ContactResolver` needs of :class:`~pstlib.dataverse.DataverseClient`."""

    def find_contacts_by_email(self, addresses: Iterable[str]) -> dict[str, str]: ...

    def create_contact(self, address: str, name: str = "") -> str: ...


class ContactResolver:
    """Resolves addresses to contact ids for one session, asking Dataverse once per address.

    With no ``client`` (the assess target) nothing is looked up: each address is reported
    ``skipped`` with what the policy would do.
    """

    def __init__(
        self,
        client: ContactDirectory | None,
        policy: ContactPolicy,
        owner: str | None,
        on_contact: ContactHook,
        *,
        workers: int = 4,
        known: Mapping[str, str] | None = None,
    ) -> None:
        self.client = client
        self.policy = policy
        self.owner = owner
        self.on_contact = on_contact
        self.workers = max(1, workers)
        self.ids: dict[str, str] = dict(known or {})  # address -> contactid
        self.settled: set[str] = set(self.ids)  # addresses already decided this session

    def resolve(self, messages: Sequence[Message]) -> dict[str, str]:
        """Decide every new correspondent of ``messages``; ``{address: contactid}`` where known.

        Raises :class:`DataverseError` only when the lookup itself fails (the target is down);
        a failed create is reported ``failed`` and the address stays unresolved.
        """
        names: dict[str, str] = {}
        for message in messages:
            for address in correspondents(message, self.owner):
                norm = address.address.strip().lower()
                if norm not in self.settled:
                    names.setdefault(norm, address.name)
        if names:
            self._settle(names)
        return self.ids

    def _settle(self, names: dict[str, str]) -> None:
        if self.client is None:
            for address, name in names.items():
                decision = self.policy.decide(address, self.owner)
                verb = "would be created" if decision.create else "would not be created"
                detail = f"assess: {verb} if missing ({decision.reason})"
                self._report(address, "skipped", name, detail)
            return
        found = self.client.find_contacts_by_email(names)
        for address, contact_id in found.items():
            self.ids[address] = contact_id
            self._report(address, "matched", names.get(address, ""), None, contact_id)
        missing = [a for a in names if a not in found]
        to_create: list[str] = []
        for address in missing:
            decision = self.policy.decide(address, self.owner)
            if decision.create:
                to_create.append(address)
            else:
                self._report(address, "skipped", names[address], decision.reason)
        if not to_create:
            return
        client = self.client

        def create(address: str) -> tuple[str, str | None, str | None]:
            try:
                return address, client.create_contact(address, names[address]), None
            except DataverseError as err:
                return address, None, str(err)

        with ThreadPoolExecutor(min(self.workers, len(to_create))) as pool:
            for address, created_id, error in pool.map(create, to_create):
                if created_id is not None:
                    self.ids[address] = created_id
                    self._report(address, "created", names[address], None, created_id)
                else:
                    log.warning("contact %s not created: %s", address, error)
                    self._report(address, "failed", names[address], error)

    def _report(
        self,
        address: str,
        action: str,
        name: str,
        detail: str | None,
        dataverse_id: str | None = None,
    ) -> None:
        self.settled.add(address)
        self.on_contact(
            address, action, name=name or None, detail=detail, dataverse_id=dataverse_id
        )

