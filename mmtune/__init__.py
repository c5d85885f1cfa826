"""mmtune: fine-tune LLMs and LLaVA-style VLMs with transformers, peft and friends."""

__version__ = "0.1.0"
