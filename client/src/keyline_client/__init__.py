"""Keyline RFQ's client for traders' machines (see keyline_client.cli)."""

__version__ = "0.1.0"
