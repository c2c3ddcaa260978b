"""A read that outlives one holder token: the gateway mints a fresh one before a page when the
current one is about to expire, and the holder, served for real, never sees an expired token.

Tiers and the holder share one test clock (common.clock, which the holder's PyJWT reads here
too), and every holder request moves it on, so a read of a few pages spans minutes of tokens.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import jwt
import jwt.api_jwt
import pytest
from flask.testing import FlaskClient

from broker.service import gateway
from common.clock import frozen, utcnow
from tests.gateway.conftest import ServedHolder, Territory, request_body

WINDOW = {"since": "2025-03-01T00:00:00+00:00", "until": "2025-03-08T00:00:00+00:00"}
STEP = timedelta(seconds=25)  # what one holder page "takes" on the shared clock
VARYING = {"iat", "exp", "jti"}


class _SharedClockMeta(type):
    def __instancecheck__(cls, instance: object) -> bool:
        return isinstance(instance, datetime)  # PyJWT's isinstance checks still see datetimes


class _SharedClockDatetime(datetime, metaclass=_SharedClockMeta):
    """PyJWT's `datetime.now()`, read from common.clock: the holder judges `exp` on our clock."""

    @classmethod
    def now(cls, tz: Any = None) -> Any:
        return utcnow() if tz is not None else utcnow().replace(tzinfo=None)


@dataclass
class Seen:
    """Each holder request: the shared clock when it came, and the bearer token it carried."""

    requests: list[tuple[datetime, str]] = field(default_factory=list)

    def tokens(self) -> list[str]:
        return list(dict.fromkeys(token for _, token in self.requests))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[datetime], None]]:
    monkeypatch.setattr(jwt.api_jwt, "datetime", _SharedClockDatetime)
    with frozen(utcnow()) as move_to:
        yield move_to


@pytest.fixture
def seen(electricity: ServedHolder, clock: Callable[[datetime], None]) -> Seen:
    """Wrap the holder: note each request, then let STEP pass once it has been answered."""
    record = Seen()
    inner = electricity.app.wsgi_app

    def wsgi(environ: Any, start_response: Any) -> Any:
        bearer = environ.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ")
        record.requests.append((utcnow(), bearer))
        try:
            return inner(environ, start_response)
        finally:
            clock(utcnow() + STEP)

    electricity.app.wsgi_app = wsgi  # type: ignore[method-assign]
    return record


def _claims(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def _grant(client: FlaskClient, territory: Territory, headers: dict[str, str]) -> str:
    answer = client.post(
        "/api/v1/access-requests", json=request_body(territory.holder.dataset), headers=headers
    )
    assert answer.get_json()["status"] == "approved", answer.get_json()
    return str(client.get("/api/v1/grants", headers=headers).get_json()[0]["id"])


def _holder_answer(holder: ServedHolder, token: str) -> int:
    """What the holder answers this token now (its own check, on the shared clock)."""
    meter = holder.subjects[0]
    request = urllib.request.Request(  # noqa: S310 (the test's own http:// holder)
        f"{holder.dataset.endpoint_url.rstrip('/')}/records?subject={meter}",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_a_read_longer_than_a_token_is_served_whole_with_a_fresh_token(
    client: FlaskClient,
    territory: Territory,
    reuser: dict[str, str],
    seen: Seen,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    meters = territory.holder.subjects
    territory.citizen(meters[0])
    territory.citizen(meters[1])
    grant_id = _grant(client, territory, reuser)
    monkeypatch.setattr(gateway, "PAGE_LIMIT", 2)  # 14 records: 7 pages, 7 x 25 s > 120 s

    answer = client.get(f"/api/v1/grants/{grant_id}/records", query_string=WINDOW, headers=reuser)
    body = json.loads(answer.get_data(as_text=True))  # cut short, it would not parse

    assert body["complete"] is True
    assert body["count"] == len(body["records"]) == 2 * 7
    served = list(seen.requests)  # the read's own requests, before ours below
    assert len(served) == 7
    first, *renewed = seen.tokens()
    assert len(renewed) == 1, "one token served the whole read"  # renewed at 100 s of 120
    # Without renewal the last pages would have gone with a token already expired, which the
    # holder refuses: the read outlived the first token.
    last_request = served[-1][0]
    assert _claims(first)["exp"] < last_request.timestamp() - 5  # past the holder's leeway
    assert _holder_answer(territory.holder, first) == 401
    # Each token is sent only while it has TOKEN_RENEW_MARGIN left, and all say the same.
    for at, token in served:
        assert _claims(token)["exp"] - at.timestamp() >= gateway.TOKEN_RENEW_MARGIN
    same = {k: v for k, v in _claims(first).items() if k not in VARYING}
    for token in renewed:
        assert {k: v for k, v in _claims(token).items() if k not in VARYING} == same
        assert _claims(token)["jti"] != _claims(first)["jti"]
    assert same["aud"] == territory.holder.url
    assert same["sub"] == f"grant:{grant_id}"


def test_a_short_read_keeps_its_one_token(
    client: FlaskClient,
    territory: Territory,
    reuser: dict[str, str],
    seen: Seen,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    territory.citizen(territory.holder.subjects[0])
    grant_id = _grant(client, territory, reuser)
    monkeypatch.setattr(gateway, "PAGE_LIMIT", 2)  # 7 records: 4 pages, 100 s on the clock
    answer = client.get(f"/api/v1/grants/{grant_id}/records", query_string=WINDOW, headers=reuser)
    assert json.loads(answer.get_data(as_text=True))["complete"] is True
    assert len(seen.requests) == 4
    assert len(seen.tokens()) == 1  # 120 s of life, 30 s of margin: renewed only at 90 s
