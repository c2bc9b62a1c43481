"""Glue between the core and training frameworks (MMEngine, Transformers)."""
