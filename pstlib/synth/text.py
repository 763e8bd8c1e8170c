"""What the messages say and whom they go to: subjects, short bodies, recipients, list headers.

:func:`compose_messages` walks the messages once in generation order (a parent always comes before
its replies), so a reply takes its parent's subject and answers to all of the parent's recipients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from pstlib.synth.people import HUMAN_CLASSES

ORIGINAL, REPLY, AUTO_REPLY = 0, 1, 2
KIND_NAMES = ("original", "reply", "auto_reply")
INCOMING, OUTGOING = 0, 1

WORDS = (
    "Atlas",
    "Borealis",
    "Cobalt",
    "Delta",
    "Everest",
    "Falcon",
    "Granite",
    "Helios",
    "Iris",
    "Juniper",
    "Kestrel",
    "Lumen",
    "Meridian",
    "Nimbus",
    "Orion",
    "Pioneer",
    "Quartz",
    "Summit",
)
HUMAN_SUBJECTS = (
    "Project {w} update",
    "Meeting on {w}",
    "{w} proposal",
    "Question about the {w} contract",
    "Follow-up: {w}",
    "{w} budget review",
    "Notes from the {w} workshop",
    "{w} timeline",
    "Réunion {w} – ordre du jour",
    "Übersicht {w}",
    "Draft for {w}",
    "{w}: next steps",
)
ONE_OFF_SUBJECTS = ("Introduction", "Inquiry about {w}", "Speaking opportunity", "Partnership idea")
VENDOR_SUBJECTS = (
    "Invoice INV-{n}",
    "Quote {n} for {w}",
    "Order {n} confirmation",
    "Renewal of {w}",
)
PROMO_SUBJECTS = ("Spring offer: {n}% off {w}", "New in our catalogue: {w}", "Last chance: {w}")
AUTOMATED_SUBJECTS = (
    "[Alert] Job {w}-{n} failed",
    "Your report {n} is ready",
    "Password expires in {k} days",
    "New sign-in to your account",
    "Ticket #{n} updated",
    "Build {n} succeeded",
)
SENTENCES = (
    "Please find the latest figures below.",
    "Could you review the draft before Thursday?",
    "From the notes of our last call, the deadline moves to Friday.",
    "I have attached nothing, as usual, but the numbers are in the shared folder.",
    "Let us discuss this at the next weekly meeting.",
    "The client confirmed the scope yesterday.",
    "From now on, please copy the whole team.",
    ">From the archive: the original quote still applies.",
    "Can we move our call to next week?",
    "Merci pour votre retour rapide.",
    "The invoice has been approved and paid.",
    "Thanks for the quick turnaround on this.",
)
ACKS = (
    "Thanks, that works for me.",
    "Agreed, let us go ahead.",
    "Noted, I will get back to you.",
    "From my side this is fine.",
    "Could you send the latest version?",
    "Sounds good.",
    "Perfect, thank you!",
    "I will check and revert tomorrow.",
)


@dataclass(frozen=True, slots=True)
class Composed:
    """Per message, in generation order."""

    sender: list[str]
    to: list[tuple[str, ...]]
    cc: list[tuple[str, ...]]
    subject: list[str]
    body: list[str]
    list_id: list[str | None]
    list_unsubscribe: list[str | None]
    precedence: list[str | None]
    auto_submitted: list[str | None]


def compose_messages(
    people: pd.DataFrame,
    owner_address: str,
    owner_name: str,
    contact: npt.NDArray[np.int64],
    direction: npt.NDArray[np.int8],
    kind: npt.NDArray[np.int8],
    parent: npt.NDArray[np.int64],
    promo: npt.NDArray[np.bool_],
    return_dates: list[str | None],
    rng: np.random.Generator,
    *,
    extra_to_share: float,
    cc_share: float,
) -> Composed:
    """Senders, recipients, subjects, bodies and list/automation headers for every message.

    ``return_dates`` gives, for an auto-reply, the date the owner is back (else None). Extra
    recipients (To and Cc) are the owner's colleagues, weighted by importance.
    """
    n = len(contact)
    address = people["address"].tolist()
    first = people["first_name"].tolist()
    cls = people["sender_class"].tolist()
    domain = people["domain"].tolist()
    name = people["name"].tolist()
    owner_first = owner_name.split(" ")[0]
    colleagues = np.flatnonzero((people["sender_class"] == "internal_colleague").to_numpy())
    first_by_address = dict(zip(address, first, strict=True))
    first_by_address[owner_address] = owner_first

    # draws, vectorised up front
    n_to = (rng.random(n) < extra_to_share) * (1 + (rng.random(n) < 0.3))
    n_cc = (rng.random(n) < cc_share) * (1 + rng.binomial(2, 0.35, n))
    if len(colleagues):
        w = people["importance"].to_numpy()[colleagues] + 0.1
        pool = colleagues[
            rng.choice(len(colleagues), size=int((n_to + n_cc).sum()) + 1, p=w / w.sum())
        ]
    else:
        n_to[:] = 0
        n_cc[:] = 0
        pool = np.zeros(1, dtype=np.int64)
    pool_addr = [address[i] for i in pool.tolist()]
    template = rng.integers(0, 1 << 30, n).tolist()
    word = rng.integers(0, len(WORDS), n).tolist()
    number = rng.integers(1000, 99999, n).tolist()
    s1 = rng.integers(0, len(SENTENCES), n).tolist()
    s2 = rng.integers(0, len(SENTENCES), n).tolist()

    out = Composed([], [], [], [], [], [], [], [], [])
    issue: dict[int, int] = {}
    taken = 0
    for i, (c, d, k, p) in enumerate(
        zip(contact.tolist(), direction.tolist(), kind.tolist(), parent.tolist(), strict=True)
    ):
        ccls = cls[c]
        list_id = unsub = prec = auto = None
        if k == ORIGINAL:
            sender = address[c] if d == INCOMING else owner_address
            primary = owner_address if d == INCOMING else address[c]
            human = ccls in HUMAN_CLASSES and not promo[i]
            extra: list[str] = []
            if human:
                want = n_to[i] + n_cc[i]
                extra = [a for a in pool_addr[taken : taken + want] if a != address[c]]
                taken += want
                extra = list(dict.fromkeys(extra))
            split = min(int(n_to[i]), len(extra))
            to = (primary, *extra[:split])
            cc = tuple(extra[split:])
            w_ = WORDS[word[i]]
            if ccls == "newsletter":
                issue[c] = issue.get(c, 0) + 1
                subject = f"{name[c]}: issue {issue[c]}"
                list_id = f"{name[c]} <{address[c].split('@')[0]}.{domain[c]}>"
                unsub = f"<mailto:unsubscribe@{domain[c]}>, <https://{domain[c]}/unsubscribe>"
                prec = "bulk"
                body = (
                    f"This week in {name[c]}:\n\n* {SENTENCES[s1[i]]}\n* {SENTENCES[s2[i]]}\n\n"
                    f"Unsubscribe: https://{domain[c]}/unsubscribe\n"
                )
            elif ccls == "automated":
                t = AUTOMATED_SUBJECTS[template[i] % len(AUTOMATED_SUBJECTS)]
                subject = t.format(w=w_, n=number[i], k=1 + number[i] % 14)
                auto = "auto-generated"
                body = f"This is an automated message from {domain[c]}. Please do not reply.\n"
            else:
                if promo[i]:
                    t = PROMO_SUBJECTS[template[i] % len(PROMO_SUBJECTS)]
                    unsub = f"<https://{domain[c]}/unsubscribe>"
                    prec = "bulk"
                elif ccls == "vendor":
                    t = VENDOR_SUBJECTS[template[i] % len(VENDOR_SUBJECTS)]
                elif ccls == "one_off":
                    t = ONE_OFF_SUBJECTS[template[i] % len(ONE_OFF_SUBJECTS)]
                else:
                    t = HUMAN_SUBJECTS[template[i] % len(HUMAN_SUBJECTS)]
                subject = t.format(w=w_, n=number[i] % 100 if promo[i] else number[i])
                greet = first_by_address[primary]
                me = owner_first if d == OUTGOING else first[c]
                body = (
                    f"Hi {greet},\n\n{SENTENCES[s1[i]]}\n{SENTENCES[s2[i]]}\n\n"
                    f"Best regards,\n{me}\n"
                )
        else:
            parent_sender = out.sender[p]
            sender = owner_address if d == OUTGOING else address[c]
            to = (parent_sender,)
            if k == REPLY:
                drop = {sender, parent_sender}
                cc = tuple(a for a in (*out.to[p], *out.cc[p]) if a not in drop)
                base = out.subject[p]
                subject = base if base.startswith("Re: ") else f"Re: {base}"
                me = owner_first if d == OUTGOING else first[c]
                body = f"{ACKS[s1[i] % len(ACKS)]}\n\n{me}\n"
            else:
                cc = ()
                subject = f"Automatic reply: {out.subject[p]}"
                auto = "auto-replied"
                body = (
                    f"I am out of the office until {return_dates[i]} "
                    "with limited access to email.\n\n"
                    f"{owner_first}\n"
                )
        out.sender.append(sender)
        out.to.append(to)
        out.cc.append(cc)
        out.subject.append(subject)
        out.body.append(body)
        out.list_id.append(list_id)
        out.list_unsubscribe.append(unsub)
        out.precedence.append(prec)
        out.auto_submitted.append(auto)
    return out
