"""Storage elements: where validated files are put."""
