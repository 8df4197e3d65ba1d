"""Pretraining data, by idea:

* `sources/`: what a source is (`resolve`: one resolver, one `Unit` type) and how it is read: as
  texts (`text`), token ids (`ids`), slices for parallel work (`pieces`); MDS shards (`mds`).
* `prepare/`: `twinlm prepare` (pipeline, unit workers, finalize) around one leaf, `format`.
* `heldout`: the one held-out rule, for `twinlm prepare` and a run's own cache alike.
* `store`: the sharded token store every path writes and training reads.
* `sampling`: block order and mixtures, i.e. which blocks a phase reads in which order.
* `tokenizer`: the twins' shared tokenizer; `corpus`: from a recipe to its tokenizer and stores.
"""
