"""Model loading and adapter policy."""
