"""The suite's fine-tuning head (evaluate/suite/heads.py), two things benchmarks/suite_glue_parity.py
found against run_glue's recipe: a non-ModernBERT encoder (BERT, all-MiniLM-L6-v2) failed to load
(the pooling keyword reached BertForSequenceClassification.__init__), and a run's new head was drawn
from whatever the process had drawn before, not from the run's seed (so a run matched neither
run_glue nor itself across a resume)."""

from __future__ import annotations

import torch
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, ModernBertForMaskedLM

from twinlm.data.tokenizer import for_twin, train_tokenizer
from twinlm.evaluate.suite import heads
from twinlm.models import build_config
from twinlm.recipe import ModelShape

TEXTS = [f"person {i} lives in town {i % 5} and likes {['tea', 'music', 'rivers'][i % 3]}." for i in range(200)]


def tiny_encoder(folder, family: str = "modernbert"):
    tok = for_twin(train_tokenizer(TEXTS, vocab_size=300, min_frequency=1), "encoder")
    if family == "modernbert":
        model = ModernBertForMaskedLM(build_config("encoder", ModelShape(size="micro"), tok))
    else:
        model = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                           num_attention_heads=4, intermediate_size=64, pad_token_id=tok.pad_token_id))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def new_weights(model) -> dict[str, torch.Tensor]:
    """The parameters the checkpoint did not have (the sequence-classification head)."""
    return {k: v.detach().clone() for k, v in model.named_parameters() if not k.startswith("model.")}


def test_the_new_head_depends_on_the_runs_seed_only(tmp_path):
    path = tiny_encoder(tmp_path / "enc")
    torch.manual_seed(1)
    first = new_weights(heads.load_head(path, "encoder", 3, seed=42)[0])
    torch.manual_seed(2)
    torch.rand(1000)  # another run drew from the same generator before this one
    again = new_weights(heads.load_head(path, "encoder", 3, seed=42)[0])
    other = new_weights(heads.load_head(path, "encoder", 3, seed=43)[0])
    assert first and first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_pooling_goes_to_modernberts_head_and_other_encoders_keep_their_own(tmp_path):
    modern = heads.load_head(tiny_encoder(tmp_path / "modern"), "encoder", 2, pooling="auto", seed=0)[0]
    assert modern.config.classifier_pooling == "mean"  # sentence-transformers' default
    assert heads.load_head(str(tmp_path / "modern"), "encoder", 2, pooling="cls", seed=0)[0].config.classifier_pooling == "cls"
    bert = heads.load_head(tiny_encoder(tmp_path / "bert", "bert"), "encoder", 2, pooling="mean", seed=0)[0]
    assert isinstance(bert, BertForSequenceClassification)  # its own head: the pooler over [CLS]


def test_the_worlds_classification_task_loads_a_bert_encoder_too(tmp_path):
    """The same keyword bug in the world's NLI task (evaluate/classification.py)."""
    from twinlm.evaluate.classification import ClassificationTask

    task = ClassificationTask([], [], pooling="cls")
    bert, _ = task.load(tiny_encoder(tmp_path / "bert", "bert"), "encoder")
    assert isinstance(bert, BertForSequenceClassification) and bert.config.num_labels == 3
    modern, _ = task.load(tiny_encoder(tmp_path / "modern"), "encoder")
    assert modern.config.classifier_pooling == "cls"
