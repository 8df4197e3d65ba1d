"""A phase the fit check lets through runs within the stated memory budget (peak RSS measured)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, resource, sys
    from twinlm.config import read_yaml
    from twinlm.recipe import recipe_from_dict, resolve_recipe_path
    from twinlm.train.batching import split_batch
    from twinlm.train.memory import device_budget, need_bytes
    from twinlm.train.pretrain import pretrain

    data = read_yaml(resolve_recipe_path("ettin-17m"))
    data["phases"] = [{**data["phases"][1], "source": None, "seq_len": 1024, "tokens": 2 * 1024}]
    data["data"] = {"world": {"num_people": 200}}
    recipe = recipe_from_dict(data, [
        "tokenizer.name_or_path=null", "tokenizer.vocab_size=512", "training.attn_implementation=sdpa",
        "training.precision=fp32", "training.global_batch=2", "training.batch_warmup_tokens=0",
        "training.heldout_tokens=1024", "training.memory_gb=" + sys.argv[2]])
    phase, budget = recipe.phases[0], device_budget(recipe)
    micro = split_batch(recipe, phase, 1, budget).micro_batch
    pretrain(recipe, sys.argv[1], twins=["encoder"])
    print(json.dumps({"micro": micro, "estimate": need_bytes(recipe, phase, micro, budget),
                      "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
""")


@pytest.mark.slow
def test_extension_phase_runs_within_the_stated_budget(tmp_path):
    """The ettin-17m shape's extension phase with sdpa on this CPU (attention dropout 0.1, so the
    math kernel keeps seq^2 x heads probabilities per layer), at seq 1,024 within 1.8 GB: auto picks
    micro-batch 1 (2 would not fit), and a real step's peak RSS stays under the estimate."""
    budget_gb = 1.8
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "run"), str(budget_gb)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["micro"] == 1
    assert result["peak"] <= result["estimate"] <= budget_gb * 1e9, result
