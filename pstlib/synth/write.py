"""Writing a generated mailbox: ``mailbox.mbox``, ``eml/<folder>/NNNNNN.eml`` and ``truth.json``.

The mbox holds all mail (the owner's Inbox and Sent Items together, in time order); whether a
message was received or sent follows from its ``From:`` against the owner address. It is an
mboxrd file with LF line ends: each message starts with a ``From <sender> <asctime UTC>``
line, body lines matching ``>*From `` get one more ``>``, and a blank line ends each message. EML
files hold the same text without the separator line and without the escaping, one folder per mail
folder (``Inbox``, ``Sent Items``).

Messages are built with string formatting, not ``email.message`` objects: 100,000 of them write in
about a second. Headers are RFC 5322: RFC 2822 dates with the sender's zone offset, RFC 2047
encoded words for non-ASCII names and subjects, folded address lists.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from pstlib.errors import ConfigError
from pstlib.synth.generate import Mailbox

FORMATS = ("mbox", "eml")
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')
FROM_LINE = re.compile(r"^(>*From )", re.MULTILINE)
EPOCH = date(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class SynthResult:
    """What :func:`write_mailbox` (and :func:`pstlib.synth.synthesize`) wrote."""

    out_dir: Path
    mbox_path: Path | None
    eml_dir: Path | None
    truth_path: Path
    messages: int
    messages_removed: int
    incoming: int
    outgoing: int
    contacts: int
    gaps: int
    vacations: int
    reply_pairs: int
    owner_address: str = ""


def encode_words(text: str) -> str:
    """``text`` as-is when ASCII, else RFC 2047 base64 encoded words (each under 76 characters)."""
    if text.isascii():
        return text
    words, chunk = [], ""
    for ch in text:
        if len((chunk + ch).encode("utf-8")) > 45:
            words.append(chunk)
            chunk = ""
        chunk += ch
    words.append(chunk)
    return "\n ".join(
        f"=?utf-8?b?{base64.b64encode(w.encode('utf-8')).decode('ascii')}?=" for w in words
    )


def format_address(address: str, name: str) -> str:
    """``Name <address>``, the name quoted or encoded as RFC 5322 / 2047 require."""
    if not name:
        return f"<{address}>"
    if not name.isascii():
        return f"{encode_words(name)} <{address}>"
    if SPECIALS.search(name):
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}" <{address}>'
    return f"{name} <{address}>"


class _Dates:
    """RFC 2822 ``Date:`` values and mbox ``asctime`` stamps, with per-day parts cached."""

    def __init__(self) -> None:
        self._day: dict[int, tuple[str, str]] = {}

    def _parts(self, day: int) -> tuple[str, str]:
        cached = self._day.get(day)
        if cached is None:
            d = EPOCH + timedelta(days=day)
            wd, mon = DAY_NAMES[d.weekday()], MONTH_NAMES[d.month - 1]
            cached = (f"{wd}, {d.day:02d} {mon} {d.year}", f"{wd} {mon} {d.day:2d} %s {d.year}")
            self._day[day] = cached
        return cached

    def rfc2822(self, t_s: int, offset_min: int) -> str:
        local = t_s + offset_min * 60
        day, sec = divmod(local, 86400)
        sign = "+" if offset_min >= 0 else "-"
        off = abs(offset_min)
        h, rem = divmod(sec, 3600)
        zone = f"{sign}{off // 60:02d}{off % 60:02d}"
        return f"{self._parts(day)[0]} {h:02d}:{rem // 60:02d}:{rem % 60:02d} {zone}"

    def asctime(self, t_s: int) -> str:
        day, sec = divmod(t_s, 86400)
        h, rem = divmod(sec, 3600)
        return self._parts(day)[1] % f"{h:02d}:{rem // 60:02d}:{rem % 60:02d}"


def _address_list(addresses: tuple[str, ...], formatted: dict[str, str]) -> str:
    return ",\n ".join(formatted[a] for a in addresses)


def render_messages(mailbox: Mailbox) -> list[tuple[str, str, str, int]]:
    """Per message of ``mailbox.messages``: (header block ending in a blank line, body, sender,
    sent POSIX seconds). The loop reads plain Python lists, one pass."""
    m = mailbox.messages
    formatted = {a: format_address(a, n) for a, n in mailbox.names.items()}
    dates = _Dates()
    t_s = m["sent_at_utc"].dt.as_unit("s").astype("int64").tolist()
    subjects: dict[str, str] = {}
    out: list[tuple[str, str, str, int]] = []
    cols = [
        m[c].tolist()
        for c in (
            "message_id",
            "in_reply_to",
            "references",
            "subject",
            "body",
            "sender_address",
            "to_addresses",
            "cc_addresses",
            "utc_offset_min",
            "list_id",
            "list_unsubscribe",
            "precedence",
            "auto_submitted",
        )
    ]
    for mid, irt, refs, subject, body, sender, to, cc, off, lid, unsub, prec, auto, t in zip(
        *cols, t_s, strict=True
    ):
        subj = subjects.get(subject)
        if subj is None:
            subj = subjects[subject] = encode_words(subject)
        lines = [
            f"From: {formatted[sender]}\n",
            f"To: {_address_list(to, formatted)}\n",
        ]
        if cc:
            lines.append(f"Cc: {_address_list(cc, formatted)}\n")
        lines.append(f"Subject: {subj}\nDate: {dates.rfc2822(t, off)}\nMessage-ID: {mid}\n")
        if isinstance(irt, str):
            lines.append(f"In-Reply-To: {irt}\nReferences: {refs.replace(' ', chr(10) + ' ')}\n")
        if isinstance(lid, str):
            lines.append(f"List-Id: {lid}\n")
        if isinstance(unsub, str):
            lines.append(f"List-Unsubscribe: {unsub}\n")
        if isinstance(prec, str):
            lines.append(f"Precedence: {prec}\n")
        if isinstance(auto, str):
            lines.append(f"Auto-Submitted: {auto}\nX-Auto-Response-Suppress: All\n")
        lines.append(
            "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: 8bit\n\n"
        )
        out.append(("".join(lines), body, sender, t))
    return out


def write_mbox(rendered: list[tuple[str, str, str, int]], path: Path) -> Path:
    """One mboxrd file with every rendered message, in the given order."""
    dates = _Dates()
    parts: list[str] = []
    for headers, body, sender, t in rendered:
        if "From " in body:
            body = FROM_LINE.sub(r">\1", body)
        parts.append(f"From {sender} {dates.asctime(t)}\n{headers}{body}\n")
    path.write_bytes("".join(parts).encode("utf-8"))
    return path


def write_eml(rendered: list[tuple[str, str, str, int]], folders: list[str], eml_dir: Path) -> Path:
    """One ``.eml`` file per message under ``eml_dir/<folder>/``, numbered in time order."""
    width = max(6, len(str(len(rendered))))
    for folder in sorted(set(folders)):
        (eml_dir / folder).mkdir(parents=True, exist_ok=True)
    for i, ((headers, body, _sender, _t), folder) in enumerate(zip(rendered, folders, strict=True)):
        (eml_dir / folder / f"{i:0{width}d}.eml").write_bytes((headers + body).encode("utf-8"))
    return eml_dir


def write_mailbox(
    mailbox: Mailbox, out_dir: Path | str, formats: Sequence[str] = FORMATS
) -> SynthResult:
    """Write ``mailbox`` under ``out_dir`` (created if missing): ``mailbox.mbox`` for ``"mbox"``,
    ``eml/Inbox`` and ``eml/Sent Items`` for ``"eml"``, and always ``truth.json``."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ConfigError(
            f"unknown synth output format(s) {', '.join(unknown)}; use {', '.join(FORMATS)}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rendered = render_messages(mailbox) if formats else []
    mbox_path = write_mbox(rendered, out / "mailbox.mbox") if "mbox" in formats else None
    eml_dir = (
        write_eml(rendered, mailbox.messages["folder"].tolist(), out / "eml")
        if "eml" in formats
        else None
    )
    truth_path = mailbox.truth.write_json(out / "truth.json")
    direction = mailbox.messages["direction"]
    return SynthResult(
        out_dir=out,
        mbox_path=mbox_path,
        eml_dir=eml_dir,
        truth_path=truth_path,
        messages=len(mailbox.messages),
        messages_removed=len(mailbox.removed),
        incoming=int((direction == "incoming").sum()),
        outgoing=int((direction == "outgoing").sum()),
        contacts=len(mailbox.people),
        gaps=len(mailbox.truth.gaps),
        vacations=len(mailbox.truth.vacations),
        reply_pairs=len(mailbox.truth.reply_pairs),
        owner_address=str(mailbox.truth.meta["owner_address"]),
    )
