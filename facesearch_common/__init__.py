"""Pieces both services share: structured logging and Prometheus HTTP metrics."""
