"""Small shared helpers: typed configs, atomic file writes, logging."""
