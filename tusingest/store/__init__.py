"""Upload state: the tus state machine, its database rows, staging bytes and locks."""
