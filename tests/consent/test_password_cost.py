"""Production passwords are hashed with Argon2id at RFC 9106's low-memory profile.

The suite hashes at the lowest cost (tests/conftest.py); this checks what production uses.
"""

from __future__ import annotations

from argon2 import Type
from argon2.profiles import RFC_9106_LOW_MEMORY

from tests.conftest import PRODUCTION_HASHER


def test_production_hashes_with_argon2id_at_the_rfc_9106_low_memory_profile() -> None:
    hashed = PRODUCTION_HASHER.hash("correct horse battery staple")
    assert hashed.startswith("$argon2id$")
    assert PRODUCTION_HASHER.type is Type.ID
    assert PRODUCTION_HASHER.memory_cost >= RFC_9106_LOW_MEMORY.memory_cost  # 64 MiB
    assert PRODUCTION_HASHER.time_cost >= RFC_9106_LOW_MEMORY.time_cost
    assert f"m={PRODUCTION_HASHER.memory_cost},t={PRODUCTION_HASHER.time_cost}" in hashed
