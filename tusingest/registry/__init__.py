"""Storage element registries: where the elements are and how full they are."""
