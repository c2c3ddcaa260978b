"""The access log: every security-relevant event, appended in the caller's transaction."""
