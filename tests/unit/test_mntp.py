"""MNTP collator: masked fraction, label alignment with position i-1, mask-token choice."""

from __future__ import annotations

import pytest
import torch

from twinlm.convert.mntp import MNTPCollator, resolve_mask_token
from twinlm.errors import UserError
from twinlm.objectives import IGNORE

MASK, PAD, CLS, SEP, VOCAB = 4, 0, 1, 2, 500


def batch(rows: int = 64, length: int = 128, short: int = 0):
    gen = torch.Generator().manual_seed(0)
    examples = []
    for r in range(rows):
        n = length - (short if r % 2 else 0)
        body = torch.randint(10, VOCAB, (n - 2,), generator=gen)
        examples.append({"input_ids": [CLS, *body.tolist(), SEP]})
    return examples


def collator(ratio: float, shift: str) -> MNTPCollator:
    return MNTPCollator(MASK, PAD, VOCAB, [PAD, CLS, SEP, MASK], ratio, shift=shift,
                        generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("ratio", [0.2, 0.5])
def test_masks_the_requested_fraction_of_real_tokens(ratio):
    examples = batch(short=40)
    out = collator(ratio, "model")(examples)
    labelled = out["labels"] != IGNORE
    maskable = (out["attention_mask"] == 1).sum().item() - 2 * len(examples)  # CLS/SEP never masked
    assert abs(labelled.sum().item() / maskable - ratio) < 0.03
    assert not labelled[:, 0].any()  # position 0 has no predecessor
    assert not labelled[out["attention_mask"] == 0].any()  # padding is never a target
    # 80/10/10: most selected inputs show the mask token, a few are random or kept.
    shown_mask = (out["input_ids"][labelled] == MASK).float().mean().item()
    assert 0.75 < shown_mask < 0.85


def test_labels_line_up_with_position_i_minus_1():
    examples = batch(rows=8, length=32)
    original = torch.tensor([e["input_ids"] for e in examples])
    model_side = collator(0.3, "model")(examples)
    pre_shifted = collator(0.3, "collator")(examples)  # same generator seed: same positions
    sel = model_side["labels"] != IGNORE
    # shift="model": the label of masked position i sits at i, holding the original token;
    # a causal-LM loss compares it with the logits at i - 1.
    assert torch.equal(model_side["labels"][sel], original[sel])
    # shift="collator": the same label moved to i - 1, for classes whose loss does not shift.
    assert torch.equal(pre_shifted["labels"][:, :-1], model_side["labels"][:, 1:])
    assert (pre_shifted["labels"][:, -1] == IGNORE).all()


def test_causal_lm_loss_uses_logits_at_i_minus_1():
    """The HF causal-LM loss on MNTP labels equals cross-entropy of logits[i-1] vs token i."""
    from transformers import ModernBertDecoderConfig, ModernBertDecoderForCausalLM

    config = ModernBertDecoderConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                     num_attention_heads=2, pad_token_id=PAD, bos_token_id=CLS, eos_token_id=SEP,
                                     cls_token_id=CLS, sep_token_id=SEP)
    torch.manual_seed(0)
    model = ModernBertDecoderForCausalLM(config).eval()
    out = collator(0.3, "model")(batch(rows=4, length=20))
    with torch.no_grad():
        result = model(input_ids=out["input_ids"], attention_mask=out["attention_mask"], labels=out["labels"])
    b, i = torch.nonzero(out["labels"] != IGNORE, as_tuple=True)
    manual = torch.nn.functional.cross_entropy(result.logits[b, i - 1], out["labels"][b, i])
    assert abs(result.loss.item() - manual.item()) < 1e-5


class Tok:
    """The few tokenizer attributes resolve_mask_token reads."""

    def __init__(self, mask=None, eos=SEP):
        self.mask_token_id, self.eos_token_id = mask, eos

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [7] if text == "_" else [8, 9]}


def test_mask_token_choice():
    assert resolve_mask_token(Tok(mask=MASK), None) == (MASK, False)
    assert resolve_mask_token(Tok(), "eos") == (SEP, False)
    assert resolve_mask_token(Tok(), "_") == (7, False)
    with pytest.raises(UserError, match="no mask token; pass --mask-token"):
        resolve_mask_token(Tok(), None)
    with pytest.raises(UserError, match="is 2 tokens"):
        resolve_mask_token(Tok(), "<mask>")
    with pytest.raises(UserError, match="no eos token"):
        resolve_mask_token(Tok(eos=None), "eos")
