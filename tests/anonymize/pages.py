"""Real releases made through `anonymize.service.release` (the engine's own result shapes),
and a reader of the release page's tables, for the tests of its pages and charts."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

from sqlalchemy.orm import Session

from anonymize import service
from broker.service.ingestion import has_aggregate_grant
from tests.anonymize.conftest import RECIPIENT, Staged, spec

LISTS = ("areas", "categories", "bins", "quantiles")


def make_release(
    session: Session, organisation: Any, staged: Staged, **overrides: Any
) -> dict[str, Any]:
    """A release of `organisation` (which holds the aggregate grant: tests/anonymize's
    make_client arranges it), committed; its id and stored result."""
    body = spec(staged, **overrides)
    values: dict[str, Any] = {
        **body,
        "dataset_id": uuid.UUID(body.pop("dataset")),
        "start": date.fromisoformat(body["start"]),
        "end": date.fromisoformat(body["end"]),
        "rho": Decimal(body["rho"]),
    }
    values.pop("dataset", None)
    for name in LISTS:
        if name in values:
            values[name] = tuple(
                Decimal(str(v)) if name in ("bins", "quantiles") else v for v in values[name]
            )
    requester = service.Requester(
        organisation_id=organisation.id,
        client_id="test",
        recipients=(organisation.slug, RECIPIENT),
    )
    row, new = service.release(
        session, service.ReleaseSpec(**values), requester, grants=has_aggregate_grant
    )
    assert new
    session.commit()
    return {"id": str(row.id), "result": row.result}


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[tuple[dict[str, str], list[str]]]] = {}
        self.current: str | None = None
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if tag == "table":
            self.current = found.get("data-testid", "")
            self.tables[self.current] = []
        elif tag == "tr" and self.current is not None:
            self.tables[self.current].append((found, []))
        elif tag in ("td", "th") and self.current is not None:
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.current = None
        elif tag in ("td", "th") and self.current is not None and self.cell is not None:
            self.tables[self.current][-1][1].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def table_rows(html: str, testid: str) -> list[tuple[dict[str, str], list[str]]]:
    """The rows of the page's table `data-testid=testid` below its header: each row's
    attributes and the text of its cells."""
    parser = _Tables()
    parser.feed(html)
    return [(attrs, texts) for attrs, texts in parser.tables[testid] if "data-testid" in attrs]
