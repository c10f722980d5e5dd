"""Offline card records: payments terminals took without a network, uploaded later."""
