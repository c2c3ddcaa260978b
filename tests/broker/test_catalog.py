"""The public catalog: DCAT-AP 3.0 JSON-LD that conforms to the official SHACL shapes, with the
charter's ODRL permissions on personal data and the licence on open data; and its portal page."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pyshacl
import pytest
import rdflib
from markupsafe import escape
from rdflib.namespace import DCAT, DCTERMS, FOAF, RDF

from broker.models import Dataset, DatasetAuth, Health
from broker.service.datasets import ETALAB_2_0
from common.clock import utcnow
from tests.conftest import ISSUER, form_csrf
from tests.datasets.helpers import make_holder, open_body, personal_body, with_datasets_api

SHAPES = Path(__file__).parents[1] / "data" / "dcat-ap-3.0.0" / "dcat-ap-SHACL.ttl"
ODRL = rdflib.Namespace("http://www.w3.org/ns/odrl/2/")
# rdflib 7's own parsers still build a ConjunctiveGraph internally; nothing of ours does.
pytestmark = pytest.mark.filterwarnings(
    "ignore:ConjunctiveGraph is deprecated:DeprecationWarning:rdflib"
)


@pytest.fixture
def app(app):
    return with_datasets_api(app)


@pytest.fixture
def holder(session, make_client, charter):
    return make_holder(session, make_client)


@pytest.fixture
def registered(client, holder) -> dict[str, Any]:
    """A personal dataset and an open one, registered through the API."""
    personal = client.post(
        "/api/v1/datasets", json=personal_body(holder.resource_uri), headers=holder.headers
    )
    opened = client.post(
        "/api/v1/datasets",
        json=open_body("https://opendata.brevanne.example/buildings"),
        headers=holder.headers,
    )
    assert personal.status_code == opened.status_code == 201
    return {"personal": personal.get_json(), "open": opened.get_json()}


@pytest.fixture
def orphan(session, holder) -> Dataset:
    """A dataset whose category no purpose of the charter uses (e.g. after a new version)."""
    now = utcnow()
    dataset = Dataset(
        id=uuid.uuid4(),
        holder_id=holder.id,
        slug="orphelin",
        title={"fr": "Orphelin", "en": "Orphan"},
        description={"fr": "Sans finalité.", "en": "No purpose."},
        data_category="energy.heat.daily",
        fields=[{"name": "id", "type": "string", "personal": True, "sensitive": False}],
        subject_field="id",
        time_field=None,
        personal=True,
        endpoint_url=f"{holder.resource_uri}/orphan",
        auth=DatasetAuth.TIERS_TOKEN,
        refresh="P2D",
        licence=None,
        created_at=now,
        updated_at=now,
        health=Health.DOWN,
        health_checked_at=now,
        health_detail="HTTP 503",
    )
    session.add(dataset)
    session.commit()
    return dataset


def catalog(client) -> dict[str, Any]:
    response = client.get("/api/v1/catalog")
    assert response.status_code == 200
    assert response.mimetype == "application/ld+json"
    return response.get_json()


def graph_of(document: dict[str, Any]) -> rdflib.Graph:
    # The context is inline: parsing needs no network.
    return rdflib.Graph().parse(data=json.dumps(document), format="json-ld")


def test_the_catalog_conforms_to_the_dcat_ap_3_shapes(client, registered, orphan):
    data = graph_of(catalog(client))
    shapes = rdflib.Graph().parse(SHAPES, format="turtle")
    conforms, _, report = pyshacl.validate(data, shacl_graph=shapes, inference="none")
    assert conforms, report
    assert len(list(data.subjects(RDF.type, DCAT.Dataset))) == 3


def test_an_empty_catalog_conforms_too(client, charter):
    data = graph_of(catalog(client))
    shapes = rdflib.Graph().parse(SHAPES, format="turtle")
    conforms, _, report = pyshacl.validate(data, shacl_graph=shapes, inference="none")
    assert conforms, report


def test_the_catalog_is_public_and_describes_each_dataset(client, holder, registered):
    document = catalog(client)
    data = graph_of(document)
    (catalog_node,) = data.subjects(RDF.type, DCAT.Catalog)
    assert str(data.value(catalog_node, DCTERMS.title)) in {
        "Catalogue des données — Communauté d'agglomération du Pays de Brévanne",
        "Data catalogue — Communauté d'agglomération du Pays de Brévanne",
    }
    personal = rdflib.URIRef(f"{ISSUER}/ns/datasets/{registered['personal']['id']}")
    assert (catalog_node, DCAT.dataset, personal) in data
    titles = {(str(t), t.language) for t in data.objects(personal, DCTERMS.title)}
    assert titles == {("Courbe de charge", "fr"), ("Load curve", "en")}
    publisher = data.value(personal, DCTERMS.publisher)
    assert str(data.value(publisher, FOAF.name)) == holder.organisation.name
    theme = data.value(personal, DCAT.theme)
    assert str(theme) == f"{ISSUER}/ns/data-categories/energy.electricity.load_curve"
    assert {str(k) for k in data.objects(personal, DCAT.keyword)} >= {
        "energy.electricity.load_curve"
    }
    assert str(data.value(personal, DCTERMS.accrualPeriodicity)).endswith("/frequency/DAILY")


def test_open_data_points_to_the_holder_under_its_licence(client, registered):
    data = graph_of(catalog(client))
    opened = rdflib.URIRef(f"{ISSUER}/ns/datasets/{registered['open']['id']}")
    distribution = data.value(opened, DCAT.distribution)
    assert str(data.value(distribution, DCTERMS.license)) == ETALAB_2_0
    assert str(data.value(distribution, DCAT.accessURL)) == (
        "https://opendata.brevanne.example/buildings"
    )
    assert str(data.value(distribution, DCAT.downloadURL)) == (
        "https://opendata.brevanne.example/buildings/records"
    )
    assert data.value(distribution, ODRL.hasPolicy) is None
    assert str(data.value(opened, DCTERMS.accessRights)).endswith("/access-right/PUBLIC")


def test_personal_data_goes_through_tiers_under_the_charters_policy(
    client, holder, registered, charter
):
    document = catalog(client)
    data = graph_of(document)
    personal = rdflib.URIRef(f"{ISSUER}/ns/datasets/{registered['personal']['id']}")
    distribution = data.value(personal, DCAT.distribution)
    assert str(data.value(distribution, DCAT.accessURL)) == f"{ISSUER}/api/v1/access-requests"
    assert data.value(distribution, DCTERMS.license) is None
    assert str(data.value(personal, DCTERMS.accessRights)).endswith("/access-right/RESTRICTED")
    # The holder's endpoint of personal data is a setting, never published.
    assert registered["personal"]["endpoint_url"] not in json.dumps(document)
    assert holder.resource_uri not in json.dumps(document)

    policy = data.value(distribution, ODRL.hasPolicy)
    assert (policy, RDF.type, ODRL.Policy) in data
    assert (policy, RDF.type, ODRL.Set) in data
    permissions = list(data.objects(policy, ODRL.permission))
    purposes = {
        str(c_value)
        for permission in permissions
        for constraint in data.objects(permission, ODRL.constraint)
        if data.value(constraint, ODRL.leftOperand) == ODRL.purpose
        for c_value in data.objects(constraint, ODRL.rightOperand)
    }
    expected = {
        p.id for p in charter.doc.purposes if "energy.electricity.load_curve" in p.data_categories
    }
    assert purposes == {f"{ISSUER}/ns/purposes/{p}" for p in expected}
    assert expected == {"energy-observatory", "energy-coaching", "research"}
    for permission in permissions:
        assert data.value(permission, ODRL.target) == personal
        assert data.value(permission, ODRL.action) == ODRL.use


def test_a_category_no_purpose_uses_gets_a_prohibition(client, orphan):
    data = graph_of(catalog(client))
    node = rdflib.URIRef(f"{ISSUER}/ns/datasets/{orphan.id}")
    policy = data.value(data.value(node, DCAT.distribution), ODRL.hasPolicy)
    assert list(data.objects(policy, ODRL.permission)) == []
    (prohibition,) = data.objects(policy, ODRL.prohibition)
    assert data.value(prohibition, ODRL.target) == node


def test_the_catalogue_page_lists_holders_categories_purposes_health_and_licences(
    client, holder, registered, charter
):
    page = client.get("/catalogue")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert html.count('data-testid="dataset-card"') == 2
    assert holder.organisation.name in html
    assert "Courbe de charge électrique" in html  # the category's title from the charter
    coaching = charter.doc.purpose("energy-coaching")
    assert str(escape(coaching.title.fr)) in html
    assert 'data-purpose-id="energy-coaching"' in html
    assert 'data-health="unknown"' in html
    assert 'href="https://opendata.brevanne.example/buildings/records"' in html
    assert "Licence Ouverte 2.0 (Etalab)" in html
    assert f'href="{ETALAB_2_0}" rel="license"' in html
    # Nothing downloadable for personal data, and no endpoint of it shown.
    assert html.count('data-testid="dataset-download"') == 1
    assert registered["personal"]["endpoint_url"] not in html


def test_the_catalogue_page_shows_titles_in_the_readers_language(client, registered):
    home = client.get("/").get_data(as_text=True)
    client.post("/language", data={"csrf_token": form_csrf(home), "lang": "en"})
    html = client.get("/catalogue").get_data(as_text=True)
    assert "Load curve" in html
    assert "Courbe de charge<" not in html


def test_an_empty_catalogue_page_says_so(client, charter):
    html = client.get("/catalogue").get_data(as_text=True)
    assert 'data-testid="no-datasets"' in html
