"""The tus 1.0 HTTP surface."""
