"""Per-reuser pseudonyms: what a reuser sees instead of a citizen's identity.

A keyed HMAC of (reuser, citizen): stable for one reuser across reads and grants, so a reuser
can follow a household over time; different for every reuser, so two reusers cannot join their
extracts; and nobody without Tiers' key can compute one from a citizen id (or a holder's
meter number, which never enters it). The key is derived from SECRET_KEY for this use only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

from common.settings import derived_key

KEY_PURPOSE = "pseudonyms/v1"


class Pseudonymiser:
    """Pseudonyms for one reuser; the key is read once per instance."""

    def __init__(self, recipient: uuid.UUID) -> None:
        self._key = derived_key(KEY_PURPOSE)
        self._prefix = recipient.bytes

    def __call__(self, subject_id: uuid.UUID) -> str:
        digest = hmac.new(self._key, self._prefix + subject_id.bytes, hashlib.sha256).digest()
        # 160 bits, base32 without padding: 32 characters, safe in URLs and spreadsheets.
        return base64.b32encode(digest[:20]).decode().lower()
