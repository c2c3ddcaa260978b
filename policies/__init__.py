"""The policy decision point: charter + consents + request -> decision + obligations (later)."""
