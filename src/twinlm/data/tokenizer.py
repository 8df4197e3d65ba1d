"""The twins' shared tokenizer: trained BPE with ModernBERT-style special tokens, or any existing one.

Both twins share the vocabulary. They differ only in what the tokenizer adds around a single
text: the encoder gets `[CLS] text [SEP]` (as ModernBERT), the decoder only `[CLS] text` so that
a prompt does not end in the end-of-document token and generation continues the text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from twinlm.errors import UserError
from twinlm.model_files import check_tokenizer_source

SPECIAL = {"unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]"}


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8192, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Byte-level BPE (the family of ModernBERT's OLMo tokenizer) trained on `texts`."""
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="[CLS]", eos_token="[SEP]", model_max_length=8192, **SPECIAL
    )
    # The fill-mask pipeline writes " [MASK]" after a word; lstrip lets the mask absorb that space.
    fast.add_special_tokens({"mask_token": _lstrip_mask()})
    return for_twin(fast, "encoder")


def _lstrip_mask():
    from tokenizers import AddedToken

    return AddedToken("[MASK]", lstrip=True, rstrip=False, special=True, normalized=False)


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """A tokenizer by local path or hub id; it must be a fast tokenizer."""
    check_tokenizer_source(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load tokenizer {name_or_path!r}: {str(err).splitlines()[0]}") from None
    if not tok.is_fast:
        raise UserError(f"tokenizer {name_or_path!r} is not a fast tokenizer; twinlm needs one")
    return complete_special_tokens(tok)


def complete_special_tokens(tok: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Make sure both twins have what they need: a mask token (MLM), a pad token and bos/eos."""
    added = {}
    if tok.mask_token is None:
        added["mask_token"] = "[MASK]"
    if tok.pad_token is None:
        added["pad_token"] = tok.eos_token or "[PAD]"
    if tok.bos_token is None and tok.cls_token is not None:
        tok.bos_token = tok.cls_token
    if tok.eos_token is None and tok.sep_token is not None:
        tok.eos_token = tok.sep_token
    if tok.cls_token is None and tok.bos_token is not None:
        tok.cls_token = tok.bos_token
    if tok.sep_token is None and tok.eos_token is not None:
        tok.sep_token = tok.eos_token
    if added:
        tok.add_special_tokens(added)
    if tok.cls_token is None or tok.sep_token is None:
        raise UserError("the tokenizer needs a start token (cls/bos) and an end token (sep/eos)")
    return tok


def for_twin(tok: PreTrainedTokenizerBase, twin: str) -> PreTrainedTokenizerBase:
    """A copy of `tok` whose special-token template suits the twin (see the module docstring)."""
    import copy

    out = copy.deepcopy(tok)
    cls, sep = out.cls_token, out.sep_token
    cls_id, sep_id = out.cls_token_id, out.sep_token_id
    if twin == "encoder":
        single, pair = f"{cls} $A {sep}", f"{cls} $A {sep} $B {sep}"
    else:
        single, pair = f"{cls} $A", f"{cls} $A {sep} $B"
    out._tokenizer.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(cls, cls_id), (sep, sep_id)]
    )
    out.padding_side = "right"
    return out


def document_ids(tok: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Token ids of whole documents, each framed as [CLS] ... [SEP] for packing (both twins)."""
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    return [[tok.cls_token_id, *x, tok.sep_token_id] for x in ids]


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of the vocabulary and merges: equal fingerprints tokenize identically."""
    state = tokenizer.backend_tokenizer.to_str() if tokenizer.is_fast else json.dumps(tokenizer.get_vocab())
    return hashlib.sha256(state.encode()).hexdigest()[:16]
