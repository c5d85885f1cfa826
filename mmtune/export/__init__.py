"""Export: training checkpoints -> plain Hugging Face directories; LoRA merge."""
