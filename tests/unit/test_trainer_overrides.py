"""twinlm's Trainer subclasses lean on private `transformers.Trainer` methods (pyproject bounds
transformers to the versions tested). When a new transformers renames one or changes its
parameters, this fails naming the method, instead of a run that silently stops staging its
checkpoints or counting its tokens."""

from __future__ import annotations

import inspect

import pytest
from transformers import Trainer

from twinlm.align.bco_trainer import BCOTrainer
from twinlm.align.sft import sft_trainer_class
from twinlm.train.pretrain import PhaseTrainer

TRAINERS = [PhaseTrainer, BCOTrainer, sft_trainer_class()]

# Private Trainer methods twinlm calls without overriding them, with the parameters it passes.
CALLED = {
    "_get_num_items_in_batch": ["batch_samples", "device"],  # PhaseTrainer.get_batch_samples
    "_prepare_inputs": ["inputs"],  # BCOTrainer.prediction_step
}
# Private Trainer methods twinlm overrides; a new one must be added here (see the last test).
OVERRIDDEN = {"_track_num_input_tokens", "_get_output_dir", "_save_checkpoint", "_save_optimizer_and_scheduler"}

PARAMETER_KINDS = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                   inspect.Parameter.KEYWORD_ONLY)


def named_parameters(fn) -> list[str]:
    return [p.name for p in list(inspect.signature(fn).parameters.values())[1:] if p.kind in PARAMETER_KINDS]


def takes_kwargs(fn) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())


def overrides(cls) -> list[tuple[str, object, object]]:
    """(name, override, the base class's method) for every Trainer method `cls` redefines."""
    base = cls.__mro__[1]
    return [(name, fn, getattr(base, name)) for name, fn in vars(cls).items()
            if callable(fn) and not name.startswith("__") and hasattr(Trainer, name)]


def test_private_methods_twinlm_calls_keep_their_parameters():
    for name, expected in CALLED.items():
        assert hasattr(Trainer, name), f"transformers.Trainer.{name} is gone; twinlm calls it (see the comment above)"
        found = named_parameters(getattr(Trainer, name))
        assert found == expected, f"transformers.Trainer.{name} now takes {found}, twinlm passes {expected}"


@pytest.mark.parametrize("cls", TRAINERS, ids=lambda c: c.__name__)
def test_overrides_match_the_installed_trainer(cls):
    private = {name for name, _, _ in overrides(cls) if name.startswith("_")}
    for name in OVERRIDDEN & set(vars(cls)):
        assert hasattr(Trainer, name), f"transformers.Trainer.{name} is gone: {cls.__name__}.{name} is never called"
    for name, mine, theirs in overrides(cls):
        ours, base = named_parameters(mine), named_parameters(theirs)
        # The Trainer may call the method with any of its parameters, by position or by name.
        same = ours == base or (takes_kwargs(mine) and base[: len(ours)] == ours)
        assert same, (f"transformers.Trainer.{name}{inspect.signature(theirs)} changed: {cls.__name__}.{name} "
                      f"takes {ours}" + (" (a private method)" if name in private else ""))


@pytest.mark.parametrize("cls", TRAINERS, ids=lambda c: c.__name__)
def test_every_private_override_is_listed(cls):
    private = {name for name, _, _ in overrides(cls) if name.startswith("_")}
    assert private <= OVERRIDDEN, f"{cls.__name__} overrides private {sorted(private - OVERRIDDEN)}: list it here"
    assert "_get_output_dir" in private or cls is not PhaseTrainer
