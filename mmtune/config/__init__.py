"""Recipes: typed schema (schema.py) and loading with inheritance and overrides (load.py)."""
