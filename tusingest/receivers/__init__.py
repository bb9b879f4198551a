"""Adapters of webhook receivers: where events are POSTed to."""
