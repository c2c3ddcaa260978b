"""Citizens, their consents (events + projection), receipts and exports."""
