"""Completion pipeline: validation, scanning, compression, durable operations."""
