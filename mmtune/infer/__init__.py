"""Inference: one generation path shared by chat, training-time samples, eval and serve."""
