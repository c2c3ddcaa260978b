"""Every French string of the portal has its English translation (the English switch must
never show French): the messages are extracted from the code as `pybabel extract` does, with
babel.cfg, and looked up in the English catalogue."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("broker", "charter", "common", "consent", "policies", "anonymize", "audit")
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "lazy_gettext": None}


def _extracted() -> dict[str, str]:
    with (ROOT / "babel.cfg").open(encoding="utf-8") as config:
        method_map, options_map = parse_mapping_cfg(config)
    found: dict[str, str] = {}
    for package in PACKAGES:
        for filename, lineno, message, _comments, _context in extract_from_dir(
            ROOT / package, method_map, options_map, keywords=KEYWORDS
        ):
            singular = message[0] if isinstance(message, tuple) else message
            found.setdefault(singular, f"{package}/{filename}:{lineno}")
    return found


def test_every_portal_message_has_an_english_translation() -> None:
    with (ROOT / "broker/translations/en/LC_MESSAGES/messages.po").open("rb") as po:
        english = read_po(po, locale="en")
    untranslated = []
    for message, where in _extracted().items():
        entry = english.get(message) or next(
            (m for m in english if isinstance(m.id, tuple) and m.id[0] == message), None
        )
        strings = entry.string if entry is not None else None
        if not strings or (isinstance(strings, tuple) and not all(strings)):
            untranslated.append(f"{where}: {message!r}")
    assert untranslated == []
    assert len(_extracted()) > 300  # the extraction found the portal's messages
