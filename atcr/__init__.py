"""Shared core of the ATProto container registry: identity, XRPC, lexicons, settings, CLI."""

__version__ = "0.1.0"
