"""The access log over HTTP: what an auditor with none of our code downloads and checks.

Checkpoints are opened with the published log key, proofs are checked with `audit.merkle`
and with tests/audit/test_log.py's RFC 9162 implementation, leaves are hashed as served.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from audit import merkle, notes
from audit import service as audit
from common.auth import public
from common.clock import frozen, utcnow
from common.db import get_session
from tests.audit.test_log import hash_leaf, mth, verify_consistency, verify_inclusion
from tests.conftest import _app

BASE = "/api/v1/audit"


def b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def fetch_checkpoint(client: FlaskClient, vkey: str) -> notes.Checkpoint:
    response = client.get(f"{BASE}/checkpoint")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return notes.parse_checkpoint(notes.open_note(response.get_data(as_text=True), vkey))


def grow(session: Any, count: int) -> None:
    """Append and commit: in eager mode the commit seals and signs at once."""
    for i in range(count):
        audit.append(session, event="test:api:grow", actor="test", reason=str(i))
    session.commit()


@pytest.fixture
def vkey(client: FlaskClient) -> str:
    response = client.get(f"{BASE}/log-key")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return response.get_data(as_text=True).strip()


def test_the_checkpoint_is_public_signed_and_follows_the_log(client, session, vkey):
    response = client.get(f"{BASE}/checkpoint")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    grow(session, 3)
    head = fetch_checkpoint(client, vkey)
    assert head.origin == "tiers.test/tiers/audit-log"
    assert notes.parse_verifier_key(vkey).name == head.origin
    grow(session, 2)
    assert fetch_checkpoint(client, vkey).size == head.size + 2


def test_served_proofs_verify_with_an_independent_rfc_9162_implementation(
    client, session, vkey, oauth_headers
):
    heads = []
    for count in (1, 2, 4, 7, 3):
        grow(session, count)
        heads.append(fetch_checkpoint(client, vkey))
    auditor = oauth_headers("auditor", "audit:read")
    listed = client.get(f"{BASE}/entries?limit=1000", headers=auditor).get_json()
    leaves = [b64(e["leaf"]) for e in listed["entries"]]
    assert [e["index"] for e in listed["entries"]] == list(range(len(leaves)))
    hashes = [hashlib.sha256(b"\x00" + leaf).digest() for leaf in leaves]
    for head in heads:
        assert head.root == mth(hashes[: head.size])
        for index in range(head.size):
            body = client.get(f"{BASE}/proofs/inclusion?index={index}&size={head.size}").json
            proof = [b64(h) for h in body["proof"]]
            assert b64(body["leaf_hash"]) == hashes[index] == hash_leaf(leaves[index])
            assert b64(body["root"]) == head.root
            assert verify_inclusion(index, head.size, hashes[index], proof, head.root)
            assert merkle.verify_inclusion(index, head.size, hashes[index], proof, head.root)
    for old in heads:
        for new in heads:
            if old.size > new.size:
                continue
            body = client.get(f"{BASE}/proofs/consistency?from={old.size}&to={new.size}").json
            proof = [b64(h) for h in body["proof"]]
            assert (body["from"], body["to"]) == (old.size, new.size)
            assert (b64(body["from_root"]), b64(body["to_root"])) == (old.root, new.root)
            assert verify_consistency(old.size, new.size, old.root, new.root, proof)
            assert merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ("inclusion", {"query.index", "query.size"}),
        ("inclusion?index=0", {"query.size"}),
        ("inclusion?index=abc&size=2", {"query.index"}),
        ("inclusion?index=1.5&size=2", {"query.index"}),
        ("inclusion?index=-1&size=2", {"query.index"}),
        ("inclusion?index=0&size=0", {"query.size"}),
        ("inclusion?index=2&size=2", {"query.index"}),
        ("inclusion?index=0&size=6", {"query.size"}),  # beyond the latest checkpoint
        (f"inclusion?index=0&size={10**30}", {"query.size"}),
        (f"inclusion?index={2**63}&size=3", {"query.index"}),
        ("consistency?from=0&to=2", {"query.from"}),
        ("consistency?from=3&to=2", {"query.from"}),
        ("consistency?from=1&to=9", {"query.to"}),
        ("consistency?to=2", {"query.from"}),
        ("consistency?from=x&to=", {"query.from", "query.to"}),
    ],
)
def test_bad_proof_parameters_are_422_problems_naming_the_field(client, session, query, fields):
    grow(session, 5)
    response = client.get(f"{BASE}/proofs/{query}")
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert set(response.get_json()["errors"]) == fields


def test_no_proof_is_served_before_the_first_checkpoint(client):
    response = client.get(f"{BASE}/proofs/inclusion?index=0&size=1")
    assert response.status_code == 422
    assert set(response.get_json()["errors"]) == {"query.size"}


def test_the_leaves_are_for_auditors_and_paginated(client, session, oauth_headers):
    assert client.get(f"{BASE}/entries").status_code == 401
    reuser = oauth_headers("reuser", "access:request")
    assert client.get(f"{BASE}/entries", headers=reuser).status_code == 403
    auditor = oauth_headers("auditor", "audit:read")
    grow(session, 5)
    size = audit.signed_size(session)
    assert size >= 5
    seen: list[bytes] = []
    start: int | None = 0
    while start is not None:
        body = client.get(f"{BASE}/entries?start={start}&limit=2", headers=auditor).get_json()
        assert body["size"] == size
        assert len(body["entries"]) <= 2
        seen += [b64(e["leaf"]) for e in body["entries"]]
        start = body["next"]
    assert len(seen) == size
    head = notes.parse_checkpoint(notes.open_note(audit.checkpoint(session) or "", audit.log_key()))
    assert mth([hash_leaf(leaf) for leaf in seen]) == head.root
    assert client.get(f"{BASE}/entries?start={size}", headers=auditor).get_json()["entries"] == []
    for bad in ("limit=0", "limit=1001", "start=-1", "start=x"):
        response = client.get(f"{BASE}/entries?{bad}", headers=auditor)
        assert response.status_code == 422
        assert response.get_json()["errors"]


def test_a_release_refused_by_the_guard_is_a_503_with_retry_after(
    app: Flask, session_factory: sessionmaker[Session], session: Session
) -> None:
    """A stand-in route calls the guard as release endpoints do (its own app: it adds a route)."""
    app = _app(session_factory)
    client = app.test_client()

    @public
    def release() -> dict[str, str]:
        audit.require_sealed(get_session(), max_lag=timedelta(seconds=60))
        return {"released": "yes"}

    app.add_url_rule("/api/v1/test-release", view_func=release)
    start = utcnow()
    with frozen(start) as move_to:
        audit.append(session, event="test:api:pending", actor="test")  # not committed: unsealed
        assert client.get("/api/v1/test-release").status_code == 200
        move_to(start + timedelta(seconds=61))
        response = client.get("/api/v1/test-release")
        assert response.status_code == 503
        assert response.mimetype == "application/problem+json"
        assert response.get_json()["type"] == "/problems/service-unavailable"
        assert int(response.headers["Retry-After"]) > 0
        audit.integrate(session)
        audit.sign_pending(session)
        assert client.get("/api/v1/test-release").status_code == 200
