"""Held-out evaluation on bounded work gives the numbers the full-logits evaluation gave."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from twinlm.data.corpus import prepare_stores
from twinlm.data.sampling import held_out_blocks
from twinlm.data.store import TokenStore
from twinlm.objectives import IGNORE, mask_tokens
from twinlm.recipe import load_recipe
from twinlm.train.heldout import heldout_loss, sample_tokens, unigram_baseline


@torch.no_grad()
def full_logits_reference(model, twin, tokenizer, store, seq_len, mask_ratio, max_blocks, seed=0):
    """The evaluation as it was: fp32 logits of every block at once, no document masking."""
    blocks = held_out_blocks(store, seq_len, limit=max_blocks)
    gen = torch.Generator().manual_seed(seed)
    special = sorted(set(tokenizer.all_special_ids))
    loss = correct = count = 0.0
    model.eval()
    for start in range(0, len(blocks), 16):
        ids = torch.from_numpy(np.stack(blocks[start : start + 16]))
        if twin == "encoder":
            inputs, labels, _ = mask_tokens(ids, mask_ratio, tokenizer.mask_token_id, len(tokenizer), special, gen)
            logits = model(input_ids=inputs).logits
        else:
            logits, labels = model(input_ids=ids).logits[:, :-1], ids[:, 1:]
        keep = labels != IGNORE
        flat_logits, flat_labels = logits.float()[keep], labels[keep]
        loss += torch.nn.functional.cross_entropy(flat_logits, flat_labels, reduction="sum").item()
        correct += (flat_logits.argmax(-1) == flat_labels).sum().item()
        count += flat_labels.numel()
    return {"loss": loss / count, "accuracy": correct / count, "tokens": int(count)}


@pytest.fixture(scope="module")
def heldout_store(micro_run, tmp_path_factory):
    recipe = load_recipe("micro")
    tokenizer = AutoTokenizer.from_pretrained(micro_run / "encoder")
    train, heldout = prepare_stores(recipe, tokenizer, micro_run / "data", None)
    return tokenizer, train, heldout


@pytest.mark.parametrize("twin", ["encoder", "decoder"])
def test_chunked_heldout_equals_the_full_logits_evaluation(micro_run, heldout_store, twin):
    tokenizer, _, heldout = heldout_store
    cls = AutoModelForMaskedLM if twin == "encoder" else AutoModelForCausalLM
    model = cls.from_pretrained(micro_run / twin)
    seq_len, blocks = 128, 6
    ref = full_logits_reference(model, twin, tokenizer, heldout, seq_len, 0.15, blocks)
    # (The encoder's masks depend on how blocks are batched, so it keeps the reference's 16.)
    new = heldout_loss(model, twin, tokenizer, heldout, seq_len, 0.15, batch_size=16 if twin == "encoder" else 4,
                       token_budget=blocks * seq_len, document_masking=False, chunk=50)
    assert new["tokens"] == ref["tokens"] > 0
    assert new["loss"] == pytest.approx(ref["loss"], abs=1e-5)
    assert new["accuracy"] == pytest.approx(ref["accuracy"], abs=1e-9)
    # bf16 autocast (the ettin recipes' precision) stays close to fp32.
    bf16 = heldout_loss(model, twin, tokenizer, heldout, seq_len, 0.15, token_budget=blocks * seq_len,
                        document_masking=False, precision="bf16")
    assert bf16["loss"] == pytest.approx(ref["loss"], abs=0.05)
    # Documents kept apart: the decoder no longer scores a document's first token.
    apart = heldout_loss(model, twin, tokenizer, heldout, seq_len, 0.15, token_budget=blocks * seq_len)
    assert math.isfinite(apart["loss"])
    if twin == "decoder":
        starts = sum(int((b[1:] == tokenizer.cls_token_id).sum()) for b in held_out_blocks(heldout, seq_len, blocks))
        assert apart["tokens"] == ref["tokens"] - starts and starts > 0


def test_heldout_respects_its_token_budget(micro_run, heldout_store):
    tokenizer, _, heldout = heldout_store
    model = AutoModelForCausalLM.from_pretrained(micro_run / "decoder")
    small = heldout_loss(model, "decoder", tokenizer, heldout, 64, token_budget=200, document_masking=False)
    assert small["tokens"] == 3 * 63  # 200 tokens hold 3 blocks of 64, each scores 63 next tokens


def test_phase_results_carry_the_bounded_evaluation(micro_run):
    done = json.loads((micro_run / "decoder" / "phases" / "decay" / "phase.json").read_text())
    assert 0 < done["heldout"]["tokens"] <= load_recipe("micro").training.heldout_tokens


def test_unigram_baseline_sample_is_exact_on_small_stores(heldout_store):
    tokenizer, train, heldout = heldout_store
    special = tokenizer.all_special_ids
    counts = np.bincount(np.asarray(train.tokens), minlength=len(tokenizer)).astype(np.float64) + 1.0
    counts[special] = 0.0
    logp = np.log(np.maximum(counts, 1e-30) / counts.sum())
    tokens = np.asarray(heldout.tokens)
    exact = float(-logp[tokens[~np.isin(tokens, special)]].mean())
    assert unigram_baseline(train, heldout, len(tokenizer), special) == pytest.approx(exact, abs=1e-12)


def test_unigram_sample_reads_bounded_evenly_spaced_windows(tmp_path: Path):
    # A sparse 2^31-token store (4 GiB of zeros on no disk) with a marker at its very end.
    n = 2**31
    from twinlm.data.store import shard_names, write_index

    bin_name, docs_name = shard_names(0)
    with open(tmp_path / bin_name, "wb") as fh:
        fh.truncate(2 * n)
    tokens = np.memmap(tmp_path / bin_name, dtype=np.uint16, mode="r+", shape=(n,))
    tokens[-1], tokens[0] = 7, 5
    tokens.flush()
    np.asarray([0, n], dtype="<i8").tofile(tmp_path / docs_name)
    write_index(tmp_path, np.uint16, [{"tokens": bin_name, "docs": docs_name, "num_tokens": n,
                                       "num_documents": 1, "max_token_id": 7}])
    store = TokenStore.open(tmp_path)
    sample = sample_tokens(store, max_tokens=2**16, windows=64)
    assert sample.shape == (2**16,)
    assert sample[0] == 5 and sample[-1] == 7  # first window at the start, last at the end
