"""Corpus sources: a path, glob, folder or hub name read as texts or token ids.

`resolve` finds a source's units (files, MDS and save_to_disk folders, a hub name) and names
them; `text` reads their texts, `ids` their token ids (pre-tokenized data), `pieces` cuts them
into slices for `twinlm prepare`; `mds` reads MosaicML streaming shards. The names below are
the ones most callers need.
"""

from twinlm.data.sources.resolve import describe_source, source_fingerprint
from twinlm.data.sources.text import iter_texts, load_texts

__all__ = ["describe_source", "iter_texts", "load_texts", "source_fingerprint"]
