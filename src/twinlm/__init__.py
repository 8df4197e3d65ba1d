"""twinlm: twin encoder/decoder language models trained on one recipe."""

__version__ = "0.1.0"
