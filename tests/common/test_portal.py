"""common.portal's form helpers: what a posted form loads to, and how its errors read,
including a list field's (marshmallow keys them by item index)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from marshmallow import Schema, fields, validate
from werkzeug.datastructures import MultiDict

from common.errors import ConflictError, InvalidInputError
from common.portal import flat_messages, form_errors, load_form


class _Invitation(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1))
    emails = fields.List(fields.Email(), required=True)


def _posted(pairs: list[tuple[str, str]]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    app = Flask(__name__)
    with app.test_request_context("/", method="POST", data=MultiDict(pairs)):
        return load_form(_Invitation())


def test_a_list_field_reads_every_value_of_its_name_and_the_csrf_token_is_left_out():
    data, errors = _posted(
        [("csrf_token", "t"), ("name", "Ana"), ("emails", "a@x.org"), ("emails", "b@x.org")]
    )
    assert errors == {}
    assert data == {"name": "Ana", "emails": ["a@x.org", "b@x.org"]}


def test_a_list_fields_item_error_reads_as_its_message_not_its_index():
    data, errors = _posted([("name", "Ana"), ("emails", "a@x.org"), ("emails", "not-an-address")])
    assert data == {}
    # marshmallow says {"emails": {1: ["Not a valid email address."]}}: the message, flat.
    assert errors == {"emails": ["Not a valid email address."]}


def test_every_field_in_error_is_reported_with_its_own_messages():
    _, errors = _posted([("name", ""), ("emails", "x"), ("emails", "y")])
    assert errors["name"] == ["Shorter than minimum length 1."]
    assert errors["emails"] == ["Not a valid email address."] * 2


def test_a_missing_required_field_is_reported():
    _, errors = _posted([("name", "Ana")])
    assert errors == {"emails": ["Missing data for required field."]}


@pytest.mark.parametrize(
    ("nested", "flat"),
    [
        ("one", ["one"]),
        (["a", "b"], ["a", "b"]),
        ({0: ["a"], 3: ["b", "c"]}, ["a", "b", "c"]),
        ({"inner": {"field": ["deep"]}}, ["deep"]),
    ],
)
def test_messages_flatten_whatever_their_nesting(nested: Any, flat: list[str]):
    assert flat_messages(nested) == flat


def test_a_refusal_with_field_messages_keeps_them_and_one_without_shows_its_detail():
    with_fields = InvalidInputError("Bad.", fields={"slug": ["Taken."]})
    assert form_errors(with_fields) == {"slug": ["Taken."]}
    assert form_errors(ConflictError("Already decided.")) == {"_": ["Already decided."]}
