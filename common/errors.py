"""Domain errors: what services raise. No HTTP status lives here (see common.http)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class DomainError(Exception):
    """Base of every error a service raises; `code` becomes the problem `type`."""

    code = "domain-error"

    def __init__(self, detail: str, *, fields: Mapping[str, Sequence[str]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fields: dict[str, list[str]] = {k: list(v) for k, v in (fields or {}).items()}


class NotFoundError(DomainError):
    code = "not-found"


class ForbiddenError(DomainError):
    code = "forbidden"


class UnauthorizedError(DomainError):
    code = "unauthorized"


class ConflictError(DomainError):
    code = "conflict"


class InvalidInputError(DomainError):
    code = "invalid-input"


class TooManyRequestsError(DomainError):
    code = "too-many-requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class ServiceUnavailableError(DomainError):
    """A safeguard refuses for now (e.g. the access log lags): try again after `retry_after` s."""

    code = "service-unavailable"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class BadGatewayError(DomainError):
    """A service Tiers depends on (a holder's endpoint) answered something unusable."""

    code = "bad-gateway"


class InvalidTokenError(UnauthorizedError):
    """RFC 6750 / RFC 9449: no usable access token. `challenge` becomes WWW-Authenticate."""

    code = "invalid-token"

    def __init__(
        self, detail: str, *, challenge: str, nonce: str | None = None, missing: bool = False
    ) -> None:
        super().__init__(detail)
        self.challenge = challenge
        self.nonce = nonce
        if missing:  # RFC 6750 §3.1: no credentials at all is not an invalid token
            self.code = UnauthorizedError.code


class InsufficientScopeError(ForbiddenError):
    code = "insufficient-scope"
