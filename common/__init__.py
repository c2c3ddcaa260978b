"""Shared plumbing every package may use: settings, database, errors, clock, outbox, keyring.

It imports no domain package (shared/STYLE.md §3).
"""
