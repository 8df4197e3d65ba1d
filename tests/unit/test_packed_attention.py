"""Documents packed into one block never see each other: attention, positions and labels."""

from __future__ import annotations

import pytest
import torch
from transformers import ModernBertConfig, ModernBertDecoderConfig

from twinlm.models import build_twin, shared_config_kwargs
from twinlm.objectives import IGNORE, CLMCollator, MLMCollator
from twinlm.packed import document_positions, flatten_for_varlen, keep_documents_apart
from twinlm.recipe import ModelShape

CLS, SEP, PAD, MASK = 1, 2, 3, 4
SPECIAL = dict(bos_token_id=CLS, eos_token_id=SEP, pad_token_id=PAD, cls_token_id=CLS, sep_token_id=SEP)
VOCAB = 128
# Row 0 starts mid-document (a continuation, no CLS at 0); its 150-token document is longer than
# the micro shape's 128-token local window, so the sliding-window layer's mask matters.
ROWS = ([20, 150, 7, 79], [256])


def micro_twin(twin: str, attn: str = "sdpa"):
    shape = ModelShape(size="micro")  # local_attention 128, every 3rd layer global
    kwargs = shared_config_kwargs(shape, VOCAB, SPECIAL, 10_000.0)
    kwargs["attention_dropout"] = 0.0
    config = (ModernBertConfig if twin == "encoder" else ModernBertDecoderConfig)(**kwargs)
    assert config.layer_types == ["full_attention", "sliding_attention"]
    model = build_twin(twin, config, seed=0, attn_implementation=attn).eval()
    keep_documents_apart(model)
    return model


def packed_rows(seed: int = 0) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for lengths in ROWS:
        docs = []
        for i, n in enumerate(lengths):
            doc = torch.randint(MASK + 1, VOCAB, (n,), generator=gen)
            doc[-1] = SEP
            if i > 0:
                doc[0] = CLS
            docs.append(doc)
        rows.append(docs)
    return torch.stack([torch.cat(docs) for docs in rows]), rows


@pytest.mark.parametrize("twin", ["encoder", "decoder"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_documents_do_not_attend_across(twin, attn):
    model = micro_twin(twin, attn)
    ids, rows = packed_rows()
    positions = document_positions(ids, CLS)
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=positions).logits
        plain = model(input_ids=ids).logits
        for r, docs in enumerate(rows):
            start = 0
            for doc in docs:
                alone = model(input_ids=doc[None]).logits[0]
                torch.testing.assert_close(packed[r, start:start + len(doc)], alone, atol=1e-5, rtol=0)
                start += len(doc)
    # The single-document row is the plain forward; the packed row differs without the masks.
    torch.testing.assert_close(packed[1], plain[1], atol=1e-5, rtol=0)
    assert (packed[0] - plain[0]).abs().max() > 1e-3


def test_positions_restart_at_each_document():
    ids = torch.tensor([[7, 8, SEP, CLS, 9, SEP, CLS, CLS, 5]])
    assert document_positions(ids, CLS).tolist() == [[0, 1, 2, 0, 1, 2, 0, 0, 1]]


def test_decoder_labels_do_not_cross_documents():
    ids, _ = packed_rows()
    batch = CLMCollator(CLS)([{"input_ids": row} for row in ids])
    assert "attention_mask" not in batch
    starts = batch["position_ids"] == 0
    assert (batch["labels"][starts] == IGNORE).all()
    assert torch.equal(batch["labels"][~starts], ids[~starts])
    assert int(starts.sum()) == 4 + 1  # three CLS + row 0's continuation + row 1's start


class _Tok:
    cls_token_id, mask_token_id = CLS, MASK
    all_special_ids = [CLS, SEP, PAD, MASK]

    def __len__(self):
        return VOCAB


def test_mlm_positions_come_from_the_uncorrupted_block():
    ids, _ = packed_rows()
    torch.manual_seed(0)
    batch = MLMCollator(_Tok(), mask_ratio=0.5)([{"input_ids": row} for row in ids])
    assert torch.equal(batch["position_ids"], document_positions(ids, CLS))
    assert (batch["labels"][ids == CLS] == IGNORE).all()  # boundaries are never MLM targets


@pytest.mark.parametrize("twin", ["encoder", "decoder"])
def test_flattened_varlen_batch_equals_the_rows(twin):
    """The flash-attention path's flattening (one row + cu_seqlens), checked with sdpa on CPU."""
    model = micro_twin(twin)
    ids, rows = packed_rows()
    positions = document_positions(ids, CLS)
    flat = flatten_for_varlen({"input_ids": ids, "position_ids": positions, "labels": ids})
    lengths = [n for r in ROWS for n in r]
    assert flat["cu_seq_lens_q"].tolist() == torch.tensor([0] + lengths).cumsum(0).tolist()
    assert flat["max_length_q"] == max(lengths) and flat["input_ids"].shape == (1, ids.numel())
    with torch.no_grad():
        rows_out = model(input_ids=ids, position_ids=positions).logits
        flat_out = model(input_ids=flat["input_ids"], position_ids=flat["position_ids"]).logits
    torch.testing.assert_close(flat_out.view_as(rows_out), rows_out, atol=1e-5, rtol=0)


def test_document_masking_off_keeps_the_old_batches():
    ids, _ = packed_rows()
    batch = CLMCollator(CLS, document_masking=False)([{"input_ids": row} for row in ids])
    assert set(batch) == {"input_ids", "attention_mask", "labels"} and torch.equal(batch["labels"], ids)
