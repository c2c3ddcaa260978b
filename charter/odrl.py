"""The charter as an ODRL 2.2 policy set in JSON-LD (W3C ODRL Information Model 2.2).

Pure: one `Set` per purpose, built from the validated document only. Terms that ODRL lacks
(modes, privacy model, minimum cohort) live in the `tiers:` vocabulary at `{base_url}/ns#`.
"""

from __future__ import annotations

from typing import Any

from charter.document import CharterDocument, Purpose, Text, terms_hash

ODRL_CONTEXT = "http://www.w3.org/ns/odrl.jsonld"
DPV = "https://w3id.org/dpv#"
DCT = "http://purl.org/dc/terms/"


def _text(text: Text) -> dict[str, str]:
    # A language map, thanks to the "@container": "@language" term definitions in the context
    return {"fr": text.fr, "en": text.en}


def _iri(value: str) -> dict[str, str]:
    # odrl:rightOperand has no "@type": "@id" in the ODRL context, so IRIs are spelled out
    return {"@id": value}


def _context(base: str) -> list[Any]:
    return [
        ODRL_CONTEXT,
        {
            "dpv": DPV,
            "dct": DCT,
            "tiers": f"{base}/ns#",
            "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
            "xsd": "http://www.w3.org/2001/XMLSchema#",
            "vcard": "http://www.w3.org/2006/vcard/ns#",
            "dct:title": {"@id": f"{DCT}title", "@container": "@language"},
            "dct:description": {"@id": f"{DCT}description", "@container": "@language"},
        },
    ]


def _assignees(purpose: Purpose, base: str) -> list[dict[str, Any]]:
    if purpose.recipients == "named":
        return [
            {
                "@type": "Party",
                "uid": f"{base}/ns/reusers/{reuser.id}",
                "vcard:fn": reuser.name,
                "partOf": f"{base}/ns/reuser-categories/{reuser.category}",
            }
            for reuser in purpose.named_reusers
        ]
    # A reuser category is a class of organisations: ODRL's PartyCollection
    return [
        {"@type": "PartyCollection", "uid": f"{base}/ns/reuser-categories/{category}"}
        for category in purpose.reuser_categories
    ]


def _constraints(purpose: Purpose, base: str) -> list[dict[str, Any]]:
    if purpose.recipients == "named":
        recipients = [_iri(f"{base}/ns/reusers/{r.id}") for r in purpose.named_reusers]
    else:
        recipients = [_iri(f"{base}/ns/reuser-categories/{c}") for c in purpose.reuser_categories]
    return [
        {
            "leftOperand": "purpose",
            "operator": "eq",
            "rightOperand": _iri(f"{base}/ns/purposes/{purpose.id}"),
        },
        {"leftOperand": "recipient", "operator": "isAnyOf", "rightOperand": recipients},
        {
            # Retention: the data may be used for at most this long after it is received
            "leftOperand": "elapsedTime",
            "operator": "lteq",
            "rightOperand": {"@value": f"P{purpose.retention_days}D", "@type": "xsd:duration"},
        },
        {
            "leftOperand": "tiers:mode",
            "operator": "isAnyOf",
            "rightOperand": [_iri(f"tiers:{mode}") for mode in purpose.modes],
        },
    ]


def _anonymize_duty(doc: CharterDocument) -> dict[str, Any]:
    # Aggregate-only purposes: nothing leaves Tiers but differentially private statistics
    privacy = doc.privacy
    return {
        "action": [
            {
                "rdf:value": _iri("odrl:anonymize"),
                "refinement": [
                    {
                        "leftOperand": "tiers:privacyModel",
                        "operator": "eq",
                        "rightOperand": _iri("dpv:DifferentialPrivacy"),
                    },
                    {
                        "leftOperand": "tiers:minCohort",
                        "operator": "gteq",
                        "rightOperand": {"@value": privacy.min_cohort, "@type": "xsd:integer"},
                    },
                    {
                        "leftOperand": "tiers:rhoPerRelease",
                        "operator": "lteq",
                        "rightOperand": {
                            "@value": format(privacy.rho_cap_per_release, "f"),
                            "@type": "xsd:decimal",
                        },
                    },
                ],
            }
        ],
        "dct:description": {
            "fr": "Seules des statistiques protégées par la confidentialité différentielle "
            "(zCDP) sont transmises.",
            "en": "Only statistics protected by differential privacy (zCDP) are shared.",
        },
    }


def _policy(doc: CharterDocument, purpose: Purpose, base: str) -> dict[str, Any]:
    permission: dict[str, Any] = {
        "target": [f"{base}/ns/data-categories/{c}" for c in purpose.data_categories],
        "action": "use",
        "assignee": _assignees(purpose, base),
        "constraint": _constraints(purpose, base),
    }
    if purpose.modes == ("aggregate",):
        permission["duty"] = [_anonymize_duty(doc)]
    return {
        "@type": "Set",
        "uid": f"{base}/api/v1/charter/versions/{doc.version}/odrl#{purpose.id}",
        "profile": f"{base}/ns",
        "dct:title": _text(purpose.title),
        "dct:description": _text(purpose.description),
        "dct:hasVersion": doc.version,
        "tiers:termsHash": terms_hash(purpose),
        "tiers:approval": purpose.approval,
        "tiers:consentMaxDuration": {
            "@value": f"P{purpose.consent_max_days}D",
            "@type": "xsd:duration",
        },
        "permission": [permission],
    }


def to_odrl(doc: CharterDocument, *, base_url: str) -> dict[str, Any]:
    """The charter as ODRL 2.2 JSON-LD: one odrl:Set per purpose, in charter order.

    Deterministic for a given document and base_url; a trailing "/" on base_url is ignored.
    """
    base = base_url.rstrip("/")
    return {
        "@context": _context(base),
        "@graph": [_policy(doc, purpose, base) for purpose in doc.purposes],
    }
