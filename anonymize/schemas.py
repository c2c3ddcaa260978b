"""HTTP shapes of releases and budgets; services never import this module."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from marshmallow import (
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from anonymize import specs

MEASURES = specs.MEASURES
BUCKETS = (*specs.BUCKETS, "all")
_POSITIVE = validate.Range(min=Decimal(0), min_inclusive=False, error="Must be > 0.")
_ID = validate.Regexp(r"^[A-Za-z0-9._-]{1,64}\Z", error="Use 1 to 64 of A-Z a-z 0-9 . _ -")


def _public_ids(description: str) -> fields.List[str]:
    """A filter: some of the public keys (the spec checks they are the charter's or the
    dataset's)."""
    return fields.List(
        fields.String(validate=_ID),
        load_default=None,
        allow_none=True,
        validate=validate.Length(min=1, max=1000),
        metadata={"description": description},
    )


class ReleaseIn(Schema):
    """A release spec: a measure over public keys and the privacy loss it may spend."""

    dataset = fields.UUID(required=True)
    purpose = fields.String(required=True, validate=_ID)
    measure = fields.String(required=True, validate=validate.OneOf(MEASURES))
    start = fields.Date(required=True, metadata={"description": "First day of a month."})
    end = fields.Date(required=True, metadata={"description": "First day of a month, excluded."})
    bucket = fields.String(load_default="month", validate=validate.OneOf(BUCKETS))
    partition = fields.String(
        load_default=None,
        allow_none=True,
        validate=_ID,
        metadata={"description": "A partition of the charter's territory, e.g. districts."},
    )
    by_category = fields.Boolean(load_default=False)
    rho = fields.Decimal(
        load_default=None,
        allow_none=True,
        validate=_POSITIVE,
        metadata={"description": "zCDP budget (discrete Gaussian noise)."},
    )
    epsilon = fields.Decimal(
        load_default=None,
        allow_none=True,
        validate=_POSITIVE,
        metadata={"description": "Pure DP budget (discrete Laplace noise), instead of rho."},
    )
    max_cells = fields.Integer(
        load_default=None,
        allow_none=True,
        strict=True,
        validate=validate.Range(min=1, max=5000),
        metadata={
            "description": "Cells one citizen may add to (default: the time buckets, times "
            "the categories when grouping by category)."
        },
    )
    areas = _public_ids("Only these areas of the partition (public ids).")
    categories = _public_ids("Only these of the dataset's public categories.")
    bins = fields.List(
        fields.Decimal(allow_nan=False),
        load_default=None,
        allow_none=True,
        validate=validate.Length(min=2, max=101),
        metadata={"description": "Histogram: increasing bin edges, in the dataset's unit."},
    )
    bin_count = fields.Integer(
        load_default=None,
        allow_none=True,
        strict=True,
        validate=validate.Range(min=1, max=100),
        metadata={"description": "Histogram: equal bins between the dataset's bounds."},
    )
    quantiles = fields.List(
        fields.Decimal(
            allow_nan=False,
            validate=validate.Range(
                min=Decimal(0),
                max=Decimal(1),
                min_inclusive=False,
                max_inclusive=False,
                error="Must be between 0 and 1 (excluded).",
            ),
        ),
        load_default=None,
        allow_none=True,
        validate=validate.Length(min=1, max=10),
        metadata={"description": "Quantiles (e.g. 0.5, 0.9) read off the histogram."},
    )

    @validates_schema
    def _one_budget(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if (data.get("rho") is None) == (data.get("epsilon") is None):
            raise ValidationError("Give rho or epsilon (exactly one).", field_name="rho")
        for name in ("rho", "epsilon"):
            value = data.get(name)
            if value is not None and value > Decimal(100):
                raise ValidationError("Must be at most 100.", field_name=name)

    @post_load
    def _spec(self, data: dict[str, Any], **_kwargs: Any) -> specs.ReleaseSpec:
        """The spec itself: immutable, so its lists are tuples (its hash makes releases
        idempotent)."""
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return specs.ReleaseSpec(dataset_id=values.pop("dataset"), **values)


class ReleaseOut(Schema):
    id = fields.UUID()
    dataset = fields.UUID(attribute="dataset_id")
    purpose = fields.String()
    period = fields.String()
    mechanism = fields.String()
    rho = fields.Decimal(as_string=True)
    epsilon = fields.Float()
    delta = fields.Float()
    created_at = fields.DateTime()
    spec = fields.Dict()
    result = fields.Dict()


class BalanceOut(Schema):
    kind = fields.String()
    cap = fields.Decimal(as_string=True)
    spent = fields.Decimal(as_string=True)
    remaining = fields.Decimal(as_string=True)
    epsilon_spent = fields.Float()


class BudgetsOut(Schema):
    period = fields.String()
    rho_cap_per_release = fields.Decimal(as_string=True)
    min_cohort = fields.Integer()
    delta = fields.Float()
    population = fields.Nested(BalanceOut)
    reuser = fields.Nested(BalanceOut)
