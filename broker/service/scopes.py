"""Which scopes each role's clients may hold: least privilege, decided in one table."""

from __future__ import annotations

from broker.models import Role

CONSENT_READ = "consent:read"
CONSENT_WRITE = "consent:write"
DATASETS_WRITE = "datasets:write"
ACCESS_REQUEST = "access:request"
RELEASES_READ = "releases:read"
RELEASES_WRITE = "releases:write"  # asks for a release: spends privacy budget
AUDIT_READ = "audit:read"
ADMIN = "admin"

ALL = (
    CONSENT_READ,
    CONSENT_WRITE,
    DATASETS_WRITE,
    ACCESS_REQUEST,
    RELEASES_READ,
    RELEASES_WRITE,
    AUDIT_READ,
    ADMIN,
)

# consent:* act for one citizen, so they only come with a citizen's authorization (code flow).
CITIZEN_SCOPES = frozenset({CONSENT_READ, CONSENT_WRITE})

# releases:write is apart from releases:read because a release spends the territory's privacy
# budget (docs/privacy.md) while reading one spends nothing: a dashboard's token only reads.
ROLE_SCOPES: dict[Role, frozenset[str]] = {
    Role.HOLDER: frozenset({DATASETS_WRITE}),
    Role.REUSER: frozenset({ACCESS_REQUEST, CONSENT_READ}),
    Role.OBSERVATORY: frozenset({RELEASES_READ, RELEASES_WRITE, ACCESS_REQUEST}),
    Role.CITY_SERVICE: frozenset(
        {RELEASES_READ, RELEASES_WRITE, ACCESS_REQUEST, CONSENT_READ, CONSENT_WRITE}
    ),
    Role.AUDITOR: frozenset({AUDIT_READ}),
    Role.COMMITTEE: frozenset({ADMIN, AUDIT_READ, RELEASES_READ}),
}


def allowed_for(role: Role) -> frozenset[str]:
    return ROLE_SCOPES[role]


def parse(scope: str | None) -> frozenset[str]:
    return frozenset((scope or "").split())


def unknown(requested: frozenset[str]) -> list[str]:
    return sorted(requested - set(ALL))
