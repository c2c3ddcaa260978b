"""The access log's public API: `from audit import service as audit; audit.append(...)`.

`leaves`: appending, citizens' keys, their entries and erasure (crypto-shredding).
`log`: the integrator, signed checkpoints, proofs, receipts and the fail-closed guard.
Services take the caller's session and never commit (shared/STYLE.md §4).
"""

from __future__ import annotations

from audit.service.leaves import (
    APPENDED,
    ERASE_EVENT,
    LEAF_VERSION,
    MAX_LEAF_BYTES,
    SubjectEntry,
    append,
    detail,
    entries_for_subject,
    erase_subject,
    subject_tag,
)
from audit.service.log import (
    ConsistencyProof,
    InclusionProof,
    Leaf,
    checkpoint,
    consistency,
    inclusion,
    integrate,
    log_key,
    log_origin,
    receipt,
    require_sealed,
    sealed_leaves,
    sign_pending,
    signed_size,
)

__all__ = [
    "APPENDED",
    "ERASE_EVENT",
    "LEAF_VERSION",
    "MAX_LEAF_BYTES",
    "ConsistencyProof",
    "InclusionProof",
    "Leaf",
    "SubjectEntry",
    "append",
    "checkpoint",
    "consistency",
    "detail",
    "entries_for_subject",
    "erase_subject",
    "inclusion",
    "integrate",
    "log_key",
    "log_origin",
    "receipt",
    "require_sealed",
    "sealed_leaves",
    "sign_pending",
    "signed_size",
    "subject_tag",
]
