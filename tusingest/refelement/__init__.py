"""The reference ArtStore storage element: the SE HTTP API over a directory, for development,
tests and demos. Its own application: it shares the on-disk format and the local element with
the ingester, nothing of the ingester's pipeline."""
