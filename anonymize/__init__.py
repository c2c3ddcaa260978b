"""Differentially private releases, the privacy-budget ledger and pseudonyms (later)."""
