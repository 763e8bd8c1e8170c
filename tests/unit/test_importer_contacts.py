"""The contact policy: which unknown correspondents get a contact."""

from __future__ import annotations

import pytest

from pstlib.errors import ConfigError
from pstlib.importer.contacts import (
    ContactPolicy,
    ContactResolver,
    CreateContacts,
    correspondents,
    domain_matches,
    regarding_address,
)
from pstlib.models import Address, Message, Recipient, RecipientKind

OWNER = "me@contoso.com"


def test_external_only_is_the_default_and_the_owner_domain_is_internal() -> None:
    policy = ContactPolicy()
    assert policy.decide("ann@fabrikam.com", OWNER).create
    internal = policy.decide("bob@contoso.com", OWNER)
    assert not internal.create and "internal" in internal.reason
    assert not policy.decide(OWNER, OWNER).create  # never the owner


def test_create_all_includes_internal_addresses() -> None:
    policy = ContactPolicy(create=CreateContacts.ALL)
    assert policy.decide("bob@contoso.com", OWNER).create


def test_never_creates_nothing() -> None:
    decision = ContactPolicy(create="never").decide("ann@fabrikam.com", OWNER)  # type: ignore[arg-type]
    assert not decision.create and "never" in decision.reason


def test_deny_list_wins_and_covers_subdomains() -> None:
    policy = ContactPolicy(create=CreateContacts.ALL, deny_domains=frozenset({"@Spam.example"}))
    assert not policy.decide("x@spam.example", OWNER).create
    assert not policy.decide("x@mail.spam.example", OWNER).create
    assert policy.decide("x@notspam.example", OWNER).create  # a suffix is not a subdomain


def test_allow_list_limits_creation() -> None:
    policy = ContactPolicy(allow_domains=frozenset({"fabrikam.com"}))
    assert policy.decide("ann@fabrikam.com", OWNER).create
    assert policy.decide("ann@eu.fabrikam.com", OWNER).create
    refused = policy.decide("ann@northwind.com", OWNER)
    assert not refused.create and "not allowed" in refused.reason


def test_configured_internal_domains() -> None:
    policy = ContactPolicy(internal_domains=frozenset({"contoso.de"}))
    assert not policy.decide("hans@contoso.de", OWNER).create
    assert policy.internal(OWNER) == {"contoso.de", "contoso.com"}
    assert policy.internal(None) == {"contoso.de"}


def test_no_smtp_address_is_never_created() -> None:
    assert not ContactPolicy(create=CreateContacts.ALL).decide("/O=EXCHANGE/CN=BOB", None).create


def test_unknown_policy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown contact policy"):
        ContactPolicy(create="sometimes")  # type: ignore[arg-type]


def test_domain_matches() -> None:
    assert domain_matches("a.b.com", {"b.com"})
    assert not domain_matches("ab.com", {"b.com"})


def _message(outgoing: bool) -> Message:
    other = Address("ann@fabrikam.com", "Ann")
    me = Address(OWNER)
    return Message(
        source_path="x",
        item_id="1",
        sender=me if outgoing else other,
        recipients=(
            Recipient(RecipientKind.TO, other if outgoing else me),
            Recipient(RecipientKind.CC, Address("cc@contoso.com")),
            Recipient(RecipientKind.CC, Address("ANN@fabrikam.com".lower())),
            Recipient(RecipientKind.BCC, Address("")),
        ),
    )


def test_correspondents_once_each_without_the_owner() -> None:
    found = [a.address for a in correspondents(_message(False), OWNER)]
    assert found == ["ann@fabrikam.com", "cc@contoso.com"]


def test_regarding_is_the_sender_or_the_first_recipient() -> None:
    assert regarding_address(_message(False), OWNER, outgoing=False) == "ann@fabrikam.com"
    assert regarding_address(_message(True), OWNER, outgoing=True) == "ann@fabrikam.com"


class _Directory:
    """An in-memory contact directory (a test double for the two client calls)."""

    def __init__(self, known: dict[str, str]) -> None:
        self.known = known
        self.created: list[str] = []

    def find_contacts_by_email(self, addresses: object) -> dict[str, str]:
        return {a: self.known[a] for a in addresses if a in self.known}  # type: ignore[attr-defined]

    def create_contact(self, address: str, name: str = "") -> str:
        self.created.append(address)
        return f"id-{address}"


def test_resolver_matches_creates_and_skips_each_address_once() -> None:
    reports: list[tuple[str, str]] = []
    directory = _Directory({"cc@contoso.com": "id-cc"})
    resolver = ContactResolver(
        directory, ContactPolicy(), OWNER, lambda a, action, **_: reports.append((a, action))
    )
    ids = resolver.resolve([_message(False), _message(True)])
    assert ids == {"cc@contoso.com": "id-cc", "ann@fabrikam.com": "id-ann@fabrikam.com"}
    assert sorted(reports) == [("ann@fabrikam.com", "created"), ("cc@contoso.com", "matched")]
    resolver.resolve([_message(False)])
    assert len(reports) == 2 and directory.created == ["ann@fabrikam.com"]


def test_resolver_without_a_client_says_what_the_policy_would_do() -> None:
    reports: list[tuple[str, str, str]] = []
    resolver = ContactResolver(
        None, ContactPolicy(), OWNER,
        lambda a, action, detail=None, **_: reports.append((a, action, str(detail))),
    )
    assert resolver.resolve([_message(False)]) == {}
    assert [(a, act) for a, act, _ in reports] == [
        ("ann@fabrikam.com", "skipped"), ("cc@contoso.com", "skipped")
    ]
    assert "would be created" in reports[0][2] and "would not be created" in reports[1][2]
