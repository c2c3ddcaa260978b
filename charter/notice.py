"""The notice a citizen reads before consenting, and its hash (the proof it was shown).

Pure and deterministic: the same charter, purpose and language always give the same text.
"""

from __future__ import annotations

import hashlib
from datetime import date

from charter.document import CharterDocument, Purpose

# Month names spelled out here: strftime("%B") would follow the server's locale
_MONTHS = {
    "fr": "janvier février mars avril mai juin juillet août septembre octobre novembre décembre",
    "en": "January February March April May June July August September October November December",
}

# French typography puts a no-break space (U+00A0) before ":"; the notice is hashed, so it is
# written here once rather than left to the renderer
_WORDS: dict[str, dict[str, str]] = {
    "fr": {
        "what": "Ce qui est fait de vos données",
        "data": "Données concernées",
        "who": "Qui peut les recevoir",
        "auto": "Les demandes conformes à la charte sont acceptées sans examen individuel.",
        "committee": "Chaque demande est examinée par le comité de la charte avant tout accès.",
        "form": "Sous quelle forme",
        "individual": "Vos propres relevés, pseudonymisés\u00a0: ils portent un identifiant, "
        "jamais votre nom.",
        "aggregate": "Uniquement des statistiques sur des groupes d'au moins {cohort} personnes, "
        "protégées par la confidentialité différentielle. Aucune donnée individuelle "
        "n'est transmise.",
        "durations": "Durées",
        "retention": "Vos données sont conservées {days}.",
        "consent": "Votre consentement est valable {days} au plus.",
        "keeps": "Ce que vous gardez",
        "version": "Version {version} de la charte, applicable à partir du {date}.",
        "day": "jour",
        "days": "jours",
    },
    "en": {
        "what": "What is done with your data",
        "data": "Which data",
        "who": "Who may receive it",
        "auto": "Requests that follow the charter are approved without individual review.",
        "committee": "Each request is reviewed by the charter committee before any access.",
        "form": "In what form",
        "individual": "Your own records, pseudonymised: they carry an identifier, never your name.",
        "aggregate": "Only statistics on groups of at least {cohort} people, protected by "
        "differential privacy. No individual record is shared.",
        "durations": "How long",
        "retention": "Your data is kept for {days}.",
        "consent": "Your consent lasts {days} at most.",
        "keeps": "What you keep",
        "version": "Charter version {version}, effective from {date}.",
        "day": "day",
        "days": "days",
    },
}


def _long_date(day: date, lang: str) -> str:
    month = _MONTHS[lang].split()[day.month - 1]
    # French writes the first day of a month as an ordinal: "le 1er janvier"
    number = "1er" if day.day == 1 and lang == "fr" else str(day.day)
    return f"{number} {month} {day.year}"


def notice_text(doc: CharterDocument, purpose: Purpose, lang: str) -> str:
    """The plain-language notice shown before consenting ("fr" or "en"; others get French).

    Deterministic: its hash (notice_hash) is recorded with each consent.
    """
    lang = "en" if lang == "en" else "fr"
    w = _WORDS[lang]

    def days(n: int) -> str:
        # French and English agree: 1 is singular, and a purpose never lasts 0 days
        return f"{n} {w['day'] if n == 1 else w['days']}"

    data = [
        d.title.get(lang) if (d := doc.data_category(i)) else i for i in purpose.data_categories
    ]
    if purpose.recipients == "named":
        who = [r.name for r in purpose.named_reusers]
    else:
        who = [
            r.title.get(lang) if (r := doc.reuser_category(i)) else i
            for i in purpose.reuser_categories
        ]
    forms = [w[m].format(cohort=doc.privacy.min_cohort) for m in purpose.modes]
    lines = [
        purpose.title.get(lang),
        "",
        w["what"],
        purpose.description.get(lang),
        "",
        w["data"],
        *(f"- {item}" for item in data),
        "",
        w["who"],
        *(f"- {item}" for item in who),
        w[purpose.approval],
        "",
        w["form"],
        *(f"- {item}" for item in forms),
        "",
        w["durations"],
        w["retention"].format(days=days(purpose.retention_days)),
        w["consent"].format(days=days(purpose.consent_max_days)),
        "",
        w["keeps"],
        purpose.citizen_keeps.get(lang),
        "",
        w["version"].format(version=doc.version, date=_long_date(doc.effective_from, lang)),
    ]
    return "\n".join(lines) + "\n"


def notice_hash(doc: CharterDocument, purpose: Purpose, lang: str) -> str:
    """Hex SHA-256 of the UTF-8 notice text."""
    return hashlib.sha256(notice_text(doc, purpose, lang).encode("utf-8")).hexdigest()
