"""Clients of the services this one depends on (the embedder)."""
