"""tusingest: the tus 1.0 upload gateway of ArtStore."""

__version__ = "0.1.0"
