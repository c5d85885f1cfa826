"""Builders: every "recipe -> object" step, in one place.

A recipe is data (mmtune.config); data/ and models/ take only their own section of it. The
functions here read the whole recipe and hand each floor below its part:

    tokenizer.py   the run's tokenizer and chat template (stored into the tokenizer once)
    data.py        encoder, encoded datasets, training rows, eval conversations, `data check` lengths
    model.py       the model to train: a text LM with its method, or a LLaVA model with its
                   trainable parts; the same LLaVA rebuilt for export
    arguments.py   transformers TrainingArguments
    meta.py        what checkpoints record for export, chat and serve (mmtune_meta.json)
"""
