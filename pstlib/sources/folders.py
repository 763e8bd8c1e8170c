"""A folder's role (inbox, sent, deleted...) from its well-known name, in Outlook's languages.

Outlook names the default folders in the language of the profile that created the file, so the role
is looked up from the folder's own name (case- and accent-insensitive), in English, French,
German, Spanish, Italian, Portuguese and Dutch. A name that is no well-known folder gives
``OTHER``; the mbox and EML readers use the file name the same way (``Sent.mbox`` -> sent).
"""

from __future__ import annotations

import unicodedata

from pstlib.models import FolderRole

_NAMES: dict[FolderRole, tuple[str, ...]] = {
    FolderRole.INBOX: (
        "inbox",
        "boîte de réception",
        "boite de reception",
        "posteingang",
        "bandeja de entrada",
        "posta in arrivo",
        "caixa de entrada",
        "postvak in",
        "courrier entrant",
    ),
    FolderRole.SENT: (
        "sent items",
        "sent",
        "sent mail",
        "sent messages",
        "éléments envoyés",
        "messages envoyés",
        "envoyés",
        "gesendete elemente",
        "gesendete objekte",
        "gesendet",
        "elementos enviados",
        "enviados",
        "posta inviata",
        "elementi inviati",
        "itens enviados",
        "verzonden items",
    ),
    FolderRole.DELETED: (
        "deleted items",
        "deleted",
        "trash",
        "bin",
        "éléments supprimés",
        "corbeille",
        "gelöschte elemente",
        "gelöschte objekte",
        "papierkorb",
        "elementos eliminados",
        "elementos borrados",
        "posta eliminata",
        "elementi eliminati",
        "itens excluídos",
        "itens eliminados",
        "verwijderde items",
    ),
    FolderRole.DRAFTS: (
        "drafts",
        "brouillons",
        "entwürfe",
        "borradores",
        "bozze",
        "rascunhos",
        "concepten",
    ),
    FolderRole.OUTBOX: (
        "outbox",
        "boîte d'envoi",
        "boite d'envoi",
        "postausgang",
        "bandeja de salida",
        "posta in uscita",
        "caixa de saída",
        "postvak uit",
    ),
    FolderRole.JUNK: (
        "junk e-mail",
        "junk email",
        "junk",
        "spam",
        "courrier indésirable",
        "junk-e-mail",
        "junk-e-mail-ordner",
        "correo no deseado",
        "posta indesiderata",
        "lixo eletrônico",
        "ongewenste e-mail",
    ),
    FolderRole.ARCHIVE: (
        "archive",
        "archives",
        "archiv",
        "archivo",
        "archivio",
        "arquivo",
        "archief",
    ),
    FolderRole.CALENDAR: (
        "calendar",
        "calendrier",
        "kalender",
        "calendario",
        "calendário",
        "agenda",
    ),
    FolderRole.CONTACTS: (
        "contacts",
        "kontakte",
        "contactos",
        "contatti",
        "contatos",
        "contactpersonen",
    ),
    FolderRole.TASKS: ("tasks", "tâches", "aufgaben", "tareas", "attività", "tarefas", "taken"),
    FolderRole.NOTES: ("notes", "notizen", "notas", "note", "notities"),
    FolderRole.JOURNAL: ("journal", "diario", "diário", "logboek"),
}


def _fold(name: str) -> str:
    """Lower-case without accents, ``Éléments  Supprimés`` -> ``elements supprimes``."""
    decomposed = unicodedata.normalize("NFKD", name.strip().casefold())
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).split())


_ROLE_BY_NAME: dict[str, FolderRole] = {
    _fold(name): role for role, names in _NAMES.items() for name in names
}


def role_of_folder(name: str) -> FolderRole:
    """The role of a folder from its own name; ``OTHER`` when it is not a well-known folder."""
    return _ROLE_BY_NAME.get(_fold(name), FolderRole.OTHER)


def role_of_path(path: str) -> FolderRole:
    """The role of the innermost well-known folder on a ``/`` path (``Inbox/Project`` -> inbox)."""
    for part in reversed([p for p in path.split("/") if p]):
        role = role_of_folder(part)
        if role is not FolderRole.OTHER:
            return role
    return FolderRole.OTHER
