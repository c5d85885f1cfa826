"""Data: records -> conversations -> tokens -> batches."""
