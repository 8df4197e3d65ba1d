"""Conversions between the twins (exact weight mapping + cross-objective continued training) and
LLM2Vec (any supported decoder -> bidirectional sentence-embedding model)."""
