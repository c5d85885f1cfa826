"""Tiny real-architecture models and tokenizers for tests, demos and benchmarks."""
