"""A GLUE run of the suite gives the same record whatever ran before it in the process (a resumed
suite must reproduce an uninterrupted one); before heads.load_head took the run's seed, the new
head was drawn from the process's generator as the previous runs had left it."""

from __future__ import annotations

import torch

from twinlm.evaluate.models import ModelRef
from twinlm.evaluate.suite import glue
from twinlm.evaluate.suite.base import SuiteSettings


def test_a_glue_run_does_not_depend_on_what_ran_before(micro_run, glue_mirror, tmp_path):
    mirror = glue_mirror(tmp_path / "mirror", tasks=("sst2",), rows=12, eval_rows=6)
    settings = SuiteSettings(out=tmp_path / "out", data_dir=mirror, lrs=(1e-3,), seeds=(7,), steps=2, batch_sizes=(4,),
                             max_length=32, spec={"glue": ["sst2"]})
    model = ModelRef("micro", "encoder", str(micro_run / "encoder"))
    (run,) = glue.plan("sst2", model, settings)
    records = []
    for prior in (0, 1):
        torch.manual_seed(prior)
        torch.rand(prior * 1000 + 1)
        records.append(glue.execute(run, model, settings))
    keep = ("score", "metrics", "train_loss_first")
    assert {k: records[0][k] for k in keep} == {k: records[1][k] for k in keep}
