"""Shared fixtures: one tiny twin run per test session, reused by every test that needs models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

TEST_DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory) -> Path:
    """Both twins of the `micro` recipe, pretrained once (a few seconds): <run>/encoder, <run>/decoder."""
    from twinlm.recipe import load_recipe
    from twinlm.train.pretrain import pretrain

    out = tmp_path_factory.mktemp("micro_run") / "run"
    pretrain(load_recipe("micro"), out)
    return out


@pytest.fixture(scope="session")
def micro_world():
    """The small world of the `micro` recipe (the one `micro_run` was trained on)."""
    from twinlm.data.corpus import world_of
    from twinlm.recipe import load_recipe

    return world_of(load_recipe("micro"))


@pytest.fixture(scope="session")
def glue_mirror():
    """write_glue(root, tasks=..., rows=...): tiny GLUE splits in the hub layout (tests/glue_mirror.py)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from glue_mirror import write_glue

    return write_glue
