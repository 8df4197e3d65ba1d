"""Resume on another process count (the rule and its one-line refusal), randomness keyed by
samples (masks, dropout), and the save-fault helpers (full disk, the test hook)."""

from __future__ import annotations

import errno

import pytest
import torch

from twinlm.errors import UserError
from twinlm.objectives import MLMCollator
from twinlm.recipe import load_recipe
from twinlm.train.elastic import check_processes, resume_counts, run_defining
from twinlm.train.sample_rng import FIRST_SAMPLE_KEY, SAMPLE_KEY, SeededCollator, seed_dropout
from twinlm.train.save_faults import FAULT_ENV, disk_full_is_an_error, fault_point, is_disk_full


def test_resume_counts_follow_the_global_batch_and_micro_batch():
    assert resume_counts(load_recipe("micro")) == [1, 2]  # global batch 8 at micro-batch 4
    assert resume_counts(load_recipe("micro", ["training.micro_batch=auto"])) == [1, 2, 4, 8]


def test_resume_on_a_count_that_does_not_split_names_the_nearest_valid_ones():
    recipe = load_recipe("micro")
    check_processes(recipe, 2, resume=True)  # fine
    with pytest.raises(UserError) as err:
        check_processes(recipe, 3, resume=True)
    message = str(err.value)
    assert "\n" not in message
    assert "--resume on 3 processes: phase pretrain's global batch 8 at micro_batch 4 does not split over 3" in message
    assert "resumes on 2 processes, or on 4 with --set training.micro_batch=auto" in message
    with pytest.raises(UserError, match="resumes on 4 or 8 processes"):
        check_processes(load_recipe("micro", ["training.micro_batch=auto"]), 5, resume=True)
    with pytest.raises(UserError, match="nearest valid: global batch 12"):  # a new run may change its batch instead
        check_processes(recipe, 3, resume=False)


def test_a_resume_may_change_the_micro_batch_but_not_the_global_batch():
    base = run_defining(load_recipe("micro").to_dict())
    assert run_defining(load_recipe("micro", ["training.micro_batch=2"]).to_dict()) == base
    assert run_defining(load_recipe("micro", ["training.global_batch=16"]).to_dict()) != base


class _Tok:
    cls_token_id, sep_token_id, mask_token_id, pad_token_id = 1, 2, 3, 0
    all_special_ids = [0, 1, 2, 3]

    def __len__(self):
        return 100


def _collate(indices, seed=7):
    rows = {i: torch.randint(4, 100, (64,), generator=torch.Generator().manual_seed(i)) for i in indices}
    collator = SeededCollator(MLMCollator(_Tok(), 0.3, document_masking=False), seed)
    return collator([{"input_ids": rows[i], SAMPLE_KEY: i} for i in indices])


def test_a_samples_mask_does_not_depend_on_its_batch():
    together = _collate([10, 11, 12, 13])
    alone = [_collate([i]) for i in (10, 11, 12, 13)]
    for row, single in enumerate(alone):
        assert torch.equal(together["labels"][row], single["labels"][0])
        assert torch.equal(together["input_ids"][row], single["input_ids"][0])
    assert not torch.equal(together["labels"][0], together["labels"][1]), "samples get their own masks"
    assert not torch.equal(_collate([10], seed=8)["labels"], alone[0]["labels"]), "the run seed matters"
    masked = (together["labels"] != -100).float().mean().item()
    assert 0.2 < masked < 0.4  # mask ratio 0.3


def test_dropout_draws_are_keyed_by_the_micro_batchs_first_sample():
    drop = torch.nn.Dropout(0.5)

    def draw(indices):
        batch = seed_dropout(_collate(indices), 42)
        assert FIRST_SAMPLE_KEY not in batch, "model inputs only"
        return drop(torch.ones(256))

    assert torch.equal(draw([8, 9]), draw([8, 9]))
    assert not torch.equal(draw([8, 9]), draw([12, 13]))


def test_disk_full_is_a_one_line_error_that_removes_the_partial_write(tmp_path):
    staged = tmp_path / ".staging" / "checkpoint-4"
    staged.mkdir(parents=True)
    (staged / "model.safetensors").write_bytes(b"partial")
    with pytest.raises(UserError) as err, disk_full_is_an_error("decoder pretrain checkpoint-4", staged,
                                                                "checkpoint-2 is intact"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert "disk full while writing decoder pretrain checkpoint-4" in str(err.value)
    assert "checkpoint-2 is intact" in str(err.value) and "--resume" in str(err.value)
    assert not staged.exists()
    # Writers that wrap the errno: safetensors names it; other errors pass through untouched.
    assert is_disk_full(RuntimeError("IoError(Os { code: 28, kind: StorageFull })"), tmp_path)
    assert not is_disk_full(RuntimeError("file write failed"), tmp_path)  # this disk has space
    with pytest.raises(ValueError), disk_full_is_an_error("x", staged, "y"):
        raise ValueError("not a disk problem")


def test_fault_hook_fires_only_at_its_point_and_step(monkeypatch):
    fault_point("model", 4)  # unset: nothing
    monkeypatch.setenv(FAULT_ENV, "enospc:optimizer@4")
    fault_point("model", 4)
    fault_point("optimizer", 2)
    with pytest.raises(OSError) as err:
        fault_point("optimizer", 4)
    assert err.value.errno == errno.ENOSPC
