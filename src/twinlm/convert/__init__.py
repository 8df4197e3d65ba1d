"""Conversions between the twins (exact weight mapping + cross-objective continued training) and
LLM2Vec (any supported decoder -> bidirectional sentence-embedding model)."""

# What a converted folder carries beside its weights; read by `twinlm eval` / `compare`, which
# import these names from here rather than from the conversion modules (and their training stack).
CONVERSION_FILE = "conversion.json"  # twinlm convert decoder-to-encoder / encoder-to-decoder
LLM2VEC_FILE = "llm2vec.json"  # twinlm convert llm2vec
