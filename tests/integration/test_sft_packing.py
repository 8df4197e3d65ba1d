"""SFT packing (TRL's best-fit-decreasing packing, padding-free): the documents of a pack do not see
each other, so a packed batch gives the same per-token log-probs and the same loss as the same rows
trained unpacked.

TRL 1.16 packs with `packing_strategy="bfd"` into one padding-free row whose position_ids restart
at every document and which carries no attention mask; transformers 5.23 turns restarting
position_ids into a block-diagonal causal mask for sdpa and eager attention too (masking_utils:
find_packed_sequence_indices), and flash-attention varlen kernels take the `cu_seq_lens` the
collator adds. The CPU tests here cover the sdpa path; the flash-attention path needs a GPU.
"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

ROWS = [
    {"prompt": "Ada Lovelace was born in", "completion": " London."},
    {"prompt": "Where was Alan Turing born?", "completion": " In Maida Vale, London."},
    {"prompt": "Rome is the capital of", "completion": " Italy."},
    {"prompt": "The capital of Norway is", "completion": " Oslo, on the Oslofjord."},
    {"prompt": "Marie Curie was born in", "completion": " Warsaw."},
    {"prompt": "Tell me a colour.", "completion": " Blue."},
]


def _docs(tok) -> list[list[int]]:
    return [tok(r["prompt"] + r["completion"])["input_ids"] for r in ROWS]


def _models(micro_run):
    tok = AutoTokenizer.from_pretrained(micro_run / "decoder")
    twin = AutoModelForCausalLM.from_pretrained(micro_run / "decoder").eval()
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    return tok, {"modernbert-decoder": twin, "llama": llama}


@pytest.mark.parametrize("name", ["modernbert-decoder", "llama"])
def test_packed_documents_do_not_attend_to_each_other(micro_run, name):
    tok, models = _models(micro_run)
    model = models[name]
    docs = _docs(tok)
    packed = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(
        [{"input_ids": sum(docs, []), "seq_lengths": [len(d) for d in docs]}])
    with torch.no_grad():
        # use_cache=False as TRL's loss passes it: transformers only reads packing off position_ids
        # when no cache is being built (an inference-style forward of a Llama would build one).
        logits = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits[0]
        alone = [model(input_ids=torch.tensor([d])).logits[0] for d in docs]
        # The control: the same pack read as one document lets later documents see earlier ones.
        joined = model(input_ids=packed["input_ids"]).logits[0]
    start = 0
    for i, (doc, ref) in enumerate(zip(docs, alone)):
        torch.testing.assert_close(logits[start:start + len(doc)], ref, atol=2e-5, rtol=1e-4, msg=f"document {i}")
        start += len(doc)
    assert (joined[len(docs[0]):] - logits[len(docs[0]):]).abs().max() > 1e-3
    # The collator masks the label of each document's first token: it would be predicted from the
    # previous document's last token.
    starts = torch.cumsum(torch.tensor([0] + [len(d) for d in docs[:-1]]), 0)
    assert (packed["labels"][0, starts] == -100).all()
    assert int((packed["labels"] != -100).sum()) == sum(len(d) for d in docs) - len(docs)


def _first_losses(micro_run, packing: bool, steps: int = 4) -> list[float]:
    """Per-step training loss on ROWS: unpacked, the six rows are one padded batch; packed, one
    pack holds them all. Either way every step sees every row once."""
    from trl import SFTConfig

    from twinlm.align.sft import sft_trainer_class

    model = AutoModelForCausalLM.from_pretrained(micro_run / "decoder")
    tok = AutoTokenizer.from_pretrained(micro_run / "decoder")
    args = SFTConfig(output_dir=str(micro_run.parent / f"pack-{packing}"), max_steps=steps, learning_rate=5e-3,
                     per_device_train_batch_size=1 if packing else len(ROWS), packing=packing, max_length=512,
                     logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=0,
                     lr_scheduler_type="constant", completion_only_loss=True)
    trainer = sft_trainer_class()(model=model, args=args, train_dataset=Dataset.from_list(ROWS), processing_class=tok)
    assert len(trainer.train_dataset) == (1 if packing else len(ROWS))
    trainer.train()
    return [e["loss"] for e in trainer.state.log_history if "loss" in e]


def test_packing_trains_like_unpacked(micro_run):
    unpacked = _first_losses(micro_run, packing=False)
    packed = _first_losses(micro_run, packing=True)
    assert unpacked[0] == pytest.approx(packed[0], rel=1e-5)  # the same tokens, the same loss
    assert unpacked[-1] < unpacked[0] - 0.5  # it learns ...
    assert packed == pytest.approx(unpacked, rel=2e-3)  # ... and packed training follows the same path
