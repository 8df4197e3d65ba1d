"""UDM: density-ratio weights follow the known ratio; the classifier round-trips without pickle."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from twinlm.align.udm import UDM_FILE, UDMClassifier, fit_udm


def _numbers(texts: list[str]) -> np.ndarray:
    """The embedding of a prompt "1.25" is [1.25]: the prompt distributions are then known exactly."""
    return np.array([[float(t)] for t in texts])


def _prompts(mean: float, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.gauss(mean, 1.0):.4f}" for _ in range(n)]


def test_udm_weights_follow_the_known_density_ratio(tmp_path):
    # Desirable prompts ~ N(+1, 1), undesirable ~ N(-1, 1), and 3x more of the latter: the balanced
    # classifier must still recover p(x|desirable) / p(x|undesirable) = exp(2x).
    clf = fit_udm(_prompts(1.0, 1000, 0), _prompts(-1.0, 3000, 1), _numbers, sample_size=5000)
    xs = np.array([-0.3, 0.0, 0.4, 0.8, 1.1])
    assert np.abs(np.log(clf.weights(xs[:, None])) - 2 * xs).max() < 0.2
    assert clf.weights(np.array([[-3.0], [3.0]])).tolist() == [0.5, 10.0]  # clipped
    assert 0.8 < clf.accuracy < 0.9  # Bayes accuracy of two unit Gaussians 2 apart: 0.84
    clf.save(tmp_path)
    assert (tmp_path / UDM_FILE).read_bytes()[:1] != b"\x80"  # not a pickle
    back = UDMClassifier.load(tmp_path)
    assert np.array_equal(back.weights(xs[:, None]), clf.weights(xs[:, None])) and back.accuracy == clf.accuracy


def test_bco_trainer_weights_only_undesirable_rows(micro_run, tmp_path):
    from twinlm.align.bco_config import BCOConfig
    from twinlm.align.bco_data import BCOCollator, sequence_logps
    from twinlm.align.bco_trainer import BCOTrainer, bco_losses
    from twinlm.align.loading import load_decoder

    rows = [{"prompt": p, "completion": " yes", "label": True} for p in _prompts(1.0, 40, 2)]
    rows += [{"prompt": p, "completion": " no", "label": False} for p in _prompts(-1.0, 40, 3)]
    model, tok = load_decoder(micro_run / "decoder")
    args = BCOConfig(output_dir=str(tmp_path), udm=True, beta=0.5, per_device_train_batch_size=8,
                     save_strategy="no", report_to="none", use_cpu=True)
    trainer = BCOTrainer(model, args, rows, tok, embed=_numbers)
    trainer._apply_udm(None)
    data = trainer.train_dataset
    weights = np.array(data["udm_weight"])
    expected = trainer.udm.weights(_numbers(data["prompt_text"]))
    assert np.allclose(weights, expected) and weights.min() >= 0.5 and weights.max() <= 10.0
    batch = BCOCollator(tok.pad_token_id)([data[i] for i in (0, 1, 40, 41)])
    trainer.running.mean, trainer.running.count = 0.0, 1
    model.eval()
    with torch.no_grad():
        logps = sequence_logps(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                               batch["input_ids"], batch["completion_mask"])
        loss = trainer.compute_loss(model, batch)
    hand, _ = bco_losses(logps, logps, batch["label"], 0.0, 0.5)
    w = torch.tensor([1.0, 1.0, weights[40], weights[41]], dtype=torch.float32)
    assert float(loss) == pytest.approx(float((hand * w).mean()), rel=1e-5)
    assert not np.isclose(weights[40], 1.0)  # the weight made a difference
