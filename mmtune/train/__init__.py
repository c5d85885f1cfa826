"""Training: build everything from a recipe and run the transformers Trainer."""
