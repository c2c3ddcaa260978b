"""The public catalog: every registered dataset as DCAT-AP 3.0 JSON-LD, and as portal entries.

Open datasets point to the holder's own endpoint under their licence; personal datasets point
to Tiers' access path, with an ODRL policy (`odrl:hasPolicy`) made of the charter's
permissions for the purposes that may use their data category (charter/odrl.py). The JSON-LD
context is inline, so the catalog parses offline; every node a DCAT-AP shape constrains by
class carries its type. Nothing personal is published: no subject identifiers, no endpoint
settings beyond the public URL of open data.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from broker.models import Dataset, Health
from broker.service import datasets
from charter import service as charters
from charter.document import CharterDocument, DataCategory, Purpose
from charter.odrl import to_odrl

DCAT = "http://www.w3.org/ns/dcat#"
DCT = "http://purl.org/dc/terms/"
FOAF = "http://xmlns.com/foaf/0.1/"
SKOS = "http://www.w3.org/2004/02/skos/core#"
ODRL = "http://www.w3.org/ns/odrl/2/"
RDFS = "http://www.w3.org/2000/01/rdf-schema#"
XSD = "http://www.w3.org/2001/XMLSchema#"
EU = "http://publications.europa.eu/resource/authority"
JSON_MEDIA_TYPE = "https://www.iana.org/assignments/media-types/application/json"
# The EU frequency vocabulary has words for the usual schedules only; others stay unsaid.
FREQUENCIES = {
    "PT1H": "HOURLY",
    "P1D": "DAILY",
    "P1W": "WEEKLY",
    "P7D": "WEEKLY",
    "P1M": "MONTHLY",
    "P3M": "QUARTERLY",
    "P1Y": "ANNUAL",
}
# The terms of ODRL's own context that the policies use, inline (no fetch to parse them).
_ODRL_TERMS: dict[str, Any] = {
    "@vocab": ODRL,
    "uid": "@id",
    "target": {"@type": "@id"},
    "profile": {"@type": "@id"},
    "partOf": {"@type": "@id"},
    "action": {"@type": "@vocab"},
    "leftOperand": {"@type": "@vocab"},
    "operator": {"@type": "@vocab"},
}


@dataclass(frozen=True)
class Entry:
    """One dataset as the portal's catalogue page shows it."""

    dataset: Dataset
    category: DataCategory | None
    purposes: tuple[Purpose, ...]
    download_url: str | None  # open data only
    licence_label: str | None


def purposes_for(doc: CharterDocument | None, category: str) -> tuple[Purpose, ...]:
    """The charter's purposes that may use this data category, in charter order."""
    if doc is None:
        return ()
    return tuple(p for p in doc.purposes if category in p.data_categories)


def download_url(dataset: Dataset) -> str | None:
    """Where anyone downloads an open dataset (the holder's records, docs/holder-protocol.md)."""
    return None if dataset.personal else dataset.endpoint_url.rstrip("/") + "/records"


def entries(session: Session) -> list[Entry]:
    """Every dataset with its category, the purposes that may use it and, if open, its
    download link and licence."""
    charter = charters.current_or_none(session)
    doc = charter.doc if charter else None
    return [
        Entry(
            dataset=d,
            category=doc.data_category(d.data_category) if doc else None,
            purposes=purposes_for(doc, d.data_category),
            download_url=download_url(d),
            licence_label=datasets.licence_label(d.licence),
        )
        for d in datasets.list_all(session)
    ]


def _iri(value: str, kind: str) -> dict[str, str]:
    return {"@id": value, "@type": kind}


def _when(value: datetime) -> dict[str, str]:
    return {"@value": value.isoformat(), "@type": "xsd:dateTime"}


def _context(doc: CharterDocument | None, base: str) -> dict[str, Any]:
    # The charter's ODRL prefixes (dct, dpv, tiers, rdf, xsd, vcard) and language maps, then ours.
    odrl_prefixes: dict[str, Any] = to_odrl(doc, base_url=base)["@context"][1] if doc else {}
    return {
        **odrl_prefixes,
        "dcat": DCAT,
        "dct": DCT,
        "foaf": FOAF,
        "skos": SKOS,
        "odrl": ODRL,
        "rdfs": RDFS,
        "xsd": XSD,
        "tiers": f"{base}/ns#",
        "dct:title": {"@id": f"{DCT}title", "@container": "@language"},
        "dct:description": {"@id": f"{DCT}description", "@container": "@language"},
        "skos:prefLabel": {"@id": f"{SKOS}prefLabel", "@container": "@language"},
        "dcat:keyword": {"@id": f"{DCAT}keyword", "@container": "@language"},
        # ODRL's terms apply inside a policy only (a JSON-LD 1.1 property-scoped context).
        "odrl:hasPolicy": {"@id": f"{ODRL}hasPolicy", "@context": _ODRL_TERMS},
    }


def _category_concept(doc: CharterDocument | None, category: str, base: str) -> dict[str, Any]:
    found = doc.data_category(category) if doc else None
    label = {"fr": found.title.fr, "en": found.title.en} if found else {"fr": category}
    return {
        **_iri(f"{base}/ns/data-categories/{category}", "skos:Concept"),
        "skos:prefLabel": label,
        "skos:notation": category,
        "skos:inScheme": {"@id": f"{base}/ns/data-categories"},
    }


def _policy(
    dataset: Dataset, iri: str, doc: CharterDocument | None, odrl: dict[str, Any], base: str
) -> dict[str, Any]:
    """One ODRL policy per distribution (DCAT-AP allows one): the permissions of the charter's
    purposes that may use the dataset's category, each targeting this dataset. No purpose: the
    policy prohibits every use."""
    by_purpose = {p["uid"].rsplit("#", 1)[1]: p for p in odrl.get("@graph", [])}
    permissions = []
    for purpose in purposes_for(doc, dataset.data_category):
        for permission in copy.deepcopy(by_purpose[purpose.id]["permission"]):
            permission["target"] = iri
            permissions.append(permission)
    policy: dict[str, Any] = {
        # Set is a Policy in ODRL; both are said, so that shapes need no ODRL ontology.
        "@type": ["Set", "Policy"],
        "uid": f"{iri}/policy",
        "profile": f"{base}/ns",
    }
    if doc is not None:
        policy["dct:source"] = {"@id": f"{base}/api/v1/charter/versions/{doc.version}/odrl"}
        policy["dct:hasVersion"] = doc.version
    if permissions:
        policy["permission"] = permissions
    else:
        policy["prohibition"] = [{"target": iri, "action": "use"}]
    return policy


def _distribution(
    dataset: Dataset, iri: str, doc: CharterDocument | None, odrl: dict[str, Any], base: str
) -> dict[str, Any]:
    distribution: dict[str, Any] = {
        "@id": f"{iri}/distribution",
        "@type": "dcat:Distribution",
        "dcat:mediaType": _iri(JSON_MEDIA_TYPE, "dct:MediaType"),
        "tiers:health": dataset.health.value,
    }
    if dataset.health_checked_at is not None:
        distribution["tiers:healthCheckedAt"] = _when(dataset.health_checked_at)
    url = download_url(dataset)
    if url is not None:
        distribution["dct:title"] = {
            "fr": "Données ouvertes, chez le détenteur",
            "en": "Open data, at the holder's",
        }
        distribution["dcat:accessURL"] = _iri(dataset.endpoint_url, "rdfs:Resource")
        distribution["dcat:downloadURL"] = _iri(url, "rdfs:Resource")
        assert dataset.licence is not None  # noqa: S101 (open data always has one)
        licence = _iri(dataset.licence, "dct:LicenseDocument")
        if label := datasets.licence_label(dataset.licence):
            licence["rdfs:label"] = label
        distribution["dct:license"] = licence
        return distribution
    distribution["dct:title"] = {
        "fr": "Par Tiers, sous la charte et avec le consentement de chaque personne",
        "en": "Through Tiers, under the charter and with each person's consent",
    }
    distribution["dcat:accessURL"] = _iri(f"{base}/api/v1/access-requests", "rdfs:Resource")
    distribution["dcat:accessService"] = {
        **_iri(f"{base}/api/v1", "dcat:DataService"),
        "dct:title": {"fr": "API de Tiers", "en": "Tiers API"},
        "dcat:endpointURL": _iri(f"{base}/api/v1", "rdfs:Resource"),
        "dcat:endpointDescription": _iri(f"{base}/openapi.json", "rdfs:Resource"),
    }
    distribution["odrl:hasPolicy"] = _policy(dataset, iri, doc, odrl, base)
    return distribution


def _dataset(
    dataset: Dataset, doc: CharterDocument | None, odrl: dict[str, Any], base: str
) -> dict[str, Any]:
    iri = f"{base}/ns/datasets/{dataset.id}"
    category = doc.data_category(dataset.data_category) if doc else None
    node: dict[str, Any] = {
        "@id": iri,
        "@type": "dcat:Dataset",
        "dct:identifier": f"{dataset.holder.slug}/{dataset.slug}",
        "dct:title": dict(dataset.title),
        "dct:description": dict(dataset.description),
        "dct:publisher": {
            **_iri(f"{base}/ns/organisations/{dataset.holder.slug}", "foaf:Agent"),
            "foaf:name": dataset.holder.name,
        },
        "dcat:theme": _category_concept(doc, dataset.data_category, base),
        "dcat:keyword": {
            "fr": [dataset.data_category, *([category.title.fr] if category else [])],
            "en": [dataset.data_category, *([category.title.en] if category else [])],
        },
        "dct:accessRights": _iri(
            f"{EU}/access-right/{'RESTRICTED' if dataset.personal else 'PUBLIC'}",
            "dct:RightsStatement",
        ),
        "dcat:landingPage": _iri(f"{base}/catalogue#dataset-{dataset.id}", "foaf:Document"),
        "dct:issued": _when(dataset.created_at),
        "dct:modified": _when(dataset.updated_at),
        "dcat:distribution": [_distribution(dataset, iri, doc, odrl, base)],
    }
    if frequency := FREQUENCIES.get(dataset.refresh):
        node["dct:accrualPeriodicity"] = _iri(f"{EU}/frequency/{frequency}", "dct:Frequency")
    return node


def build(session: Session, *, base_url: str) -> dict[str, Any]:
    """The catalog as DCAT-AP 3.0 JSON-LD: one dcat:Catalog for the territory.

    Deterministic for a given state; conforms to the DCAT-AP 3.0.0 SHACL shapes (tested).
    """
    base = base_url.rstrip("/")
    charter = charters.current_or_none(session)
    doc = charter.doc if charter else None
    odrl = to_odrl(doc, base_url=base) if doc else {}
    found = datasets.list_all(session)
    territory = doc.territory.name if doc else "Tiers"
    catalog: dict[str, Any] = {
        "@context": _context(doc, base),
        "@id": f"{base}/api/v1/catalog",
        "@type": "dcat:Catalog",
        "dct:title": {
            "fr": f"Catalogue des données — {territory}",
            "en": f"Data catalogue — {territory}",
        },
        "dct:description": {
            "fr": "Les jeux de données que les détenteurs du territoire ont déclarés à Tiers : "
            "données ouvertes sous licence, et données personnelles accessibles seulement "
            "sous la charte, avec le consentement de chaque personne.",
            "en": "The datasets the territory's data holders registered with Tiers: open "
            "data under a licence, and personal data reachable only under the charter, with "
            "each person's consent.",
        },
        "dct:publisher": {
            **_iri(f"{base}/ns/territory", "foaf:Agent"),
            "foaf:name": territory,
        },
        "dct:language": [
            _iri(f"{EU}/language/FRA", "dct:LinguisticSystem"),
            _iri(f"{EU}/language/ENG", "dct:LinguisticSystem"),
        ],
        "foaf:homepage": _iri(f"{base}/catalogue", "foaf:Document"),
        "dcat:themeTaxonomy": {
            **_iri(f"{base}/ns/data-categories", "skos:ConceptScheme"),
            "dct:title": {
                "fr": "Catégories de données de la charte",
                "en": "Data categories of the charter",
            },
        },
        "dcat:dataset": [_dataset(d, doc, odrl, base) for d in found],
    }
    if found:
        catalog["dct:modified"] = _when(max(d.updated_at for d in found))
    return catalog


def health_counts(found: list[Entry]) -> dict[str, int]:
    """How many datasets are up, down or not probed yet (the page's summary)."""
    counts = {h.value: 0 for h in Health}
    for entry in found:
        counts[entry.dataset.health.value] += 1
    return counts
