"""The eight GLUE tasks as Ettin evaluated them: hub data, columns, metrics, sweep.

From Ettin's GLUE scripts (github.com/orionw/bert24: create_glue_sweep.py, gather_glue_sweep.py,
eval.py, glue.py, src/evals/glue_jobs.py and src/evals/finetuning_jobs.py):
* sweep: learning rate {1e-5, 3e-5, 5e-5, 8e-5, 1e-4, 3e-4} x batch {16, 32, 64, 128} x epochs
  ({1, 2, 3} for MNLI, SST-2, RTE; {2, 5, 10, 12, 15} for the rest), seed 42, weight decay 8e-6
  (decoupled: see trainer_weight_decay), AdamW betas (0.9, 0.98) eps 1e-6, linear decay after 6%
  warmup, max length 512;
* selection: the best run of the sweep on the validation split by the task's monitored metric
  (Matthews for CoLA, Spearman for STS-B, accuracy for every other task; MNLI: matched);
* a task's score in the GLUE average is the mean of all the metrics its evaluators report, x100:
  MNLI = mean(matched, mismatched accuracy), MRPC and QQP = mean(accuracy, F1), STS-B = Spearman
  (Pearson is reported beside it, but not averaged), CoLA = Matthews; the GLUE average is the mean
  of the eight task scores;
* MRPC, STS-B and RTE start from the best MNLI checkpoint (the second round of glue.py);
* evaluation and stopping: a run evaluates its validation split every EVAL_EVERY[task]
  optimiser steps (the `eval_interval` defaults of bert24's src/evals/glue_jobs.py; the sweep's
  yamls/finetuning/glue/tasks/*.yaml do not override them) and once more when training ends
  (Composer evaluates at fit end). Those task YAMLs switch on an `early_stopper` callback, which
  bert24's eval.py (build_callback) makes a Composer EarlyStopper(monitor=<task metric>,
  dataloader_label=<task>, patience="1000ba", min_delta=0.01, comp=greater). But the evaluators
  are labelled "glue_<task>" (glue_jobs.py) and Composer's EarlyStopper
  (composer/callbacks/early_stopper.py) only acts when the label matches, so it never fired:
  every run trained its whole max_duration. A run's score is its last evaluation (the metrics
  left in trainer.state.eval_metrics after fit, src/evals/finetuning_jobs.py; the W&B summary
  gather_glue_sweep.py ranks by), not its best one. The suite does the same and records every
  evaluation, so a reader sees how far the last one is from the best (`protocol` below).
"""

from __future__ import annotations

from dataclasses import dataclass

HUB_ID = "nyu-mll/glue"
LRS = (1e-5, 3e-5, 5e-5, 8e-5, 1e-4, 3e-4)
BATCH_SIZES = (16, 32, 64, 128)
SHORT_EPOCHS = (1, 2, 3)
LONG_EPOCHS = (2, 5, 10, 12, 15)
SEEDS = (42,)
WEIGHT_DECAY = 8e-6
WARMUP = 0.06
MAX_LENGTH = 512
ADAM = {"adam_beta1": 0.9, "adam_beta2": 0.98, "adam_epsilon": 1e-6}
FROM_MNLI = ("mrpc", "stsb", "rte")
# Optimiser steps between two evaluations of a run (bert24 src/evals/glue_jobs.py, eval_interval).
EVAL_EVERY = {"mnli": 2300, "qqp": 2000, "qnli": 1000, "sst2": 500, "cola": 250, "stsb": 200, "mrpc": 100, "rte": 100}


@dataclass(frozen=True)
class GlueTask:
    name: str
    columns: tuple[str, ...]  # one text, or a text pair
    labels: int  # 1: regression
    eval_splits: tuple[str, ...]
    metrics: tuple[str, ...]  # reported, on the 0-100 scale
    select: str  # the metric the sweep is chosen on
    averaged: tuple[str, ...]  # the metrics whose mean is the task's score in the GLUE average
    rows: tuple[int, ...]  # train rows, then each eval split's (the hub's, for --dry-run's cost)

    @property
    def epochs(self) -> tuple[int, ...]:
        return SHORT_EPOCHS if self.name in ("mnli", "sst2", "rte") else LONG_EPOCHS

    @property
    def eval_every(self) -> int:
        return EVAL_EVERY[self.name]


TASKS = {t.name: t for t in (
    GlueTask("mnli", ("premise", "hypothesis"), 3, ("validation_matched", "validation_mismatched"),
             ("accuracy_matched", "accuracy_mismatched"), "accuracy_matched",
             ("accuracy_matched", "accuracy_mismatched"), (392702, 9815, 9832)),
    GlueTask("cola", ("sentence",), 2, ("validation",), ("matthews", "accuracy"), "matthews", ("matthews",), (8551, 1043)),
    GlueTask("sst2", ("sentence",), 2, ("validation",), ("accuracy",), "accuracy", ("accuracy",), (67349, 872)),
    GlueTask("qqp", ("question1", "question2"), 2, ("validation",), ("accuracy", "f1"), "accuracy",
             ("accuracy", "f1"), (363846, 40430)),
    GlueTask("qnli", ("question", "sentence"), 2, ("validation",), ("accuracy",), "accuracy", ("accuracy",), (104743, 5463)),
    GlueTask("mrpc", ("sentence1", "sentence2"), 2, ("validation",), ("accuracy", "f1"), "accuracy",
             ("accuracy", "f1"), (3668, 408)),
    GlueTask("stsb", ("sentence1", "sentence2"), 1, ("validation",), ("pearson", "spearman"), "spearman",
             ("spearman",), (5749, 1500)),
    GlueTask("rte", ("sentence1", "sentence2"), 2, ("validation",), ("accuracy",), "accuracy", ("accuracy",), (2490, 277)),
)}
# The paper's order for tables: the two headline tasks, then the rest as GLUE lists them.
TABLE_ORDER = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")
LABELS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP", "mnli": "MNLI",
          "qnli": "QNLI", "rte": "RTE"}


def trainer_weight_decay(lr: float) -> float:
    """WEIGHT_DECAY as the HF Trainer's AdamW needs it to decay the weights as Ettin's optimiser
    did. Ettin's is Composer's DecoupledAdamW (bert24 eval.py, norms and biases excluded as the
    Trainer excludes them), which shrinks each weight by weight_decay x lr_t / lr_peak per step
    (composer/optim/decoupled_weight_decay.py); torch's AdamW shrinks it by weight_decay x lr_t.
    Passing 8e-6 as it is would decay about 1/lr_peak (10^4 to 10^5) times less than Ettin did."""
    return WEIGHT_DECAY / lr


def scores(task_metrics: dict[str, float], select: str, averaged: tuple[str, ...]) -> tuple[float, float]:
    """(the number the sweep is chosen on, the task's score in the GLUE average), both 0-100."""
    return task_metrics[select], sum(task_metrics[m] for m in averaged) / len(averaged)


def metric_values(task: GlueTask, split_preds: dict[str, tuple[list, list]]) -> dict[str, float]:
    """The task's metrics on the 0-100 scale from {eval split: (gold, predicted)}."""
    import numpy as np
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    out: dict[str, float] = {}
    for split, (gold, pred) in split_preds.items():
        if task.labels == 1:
            # A constant prediction has no correlation; scipy warns and returns NaN. Score it 0.
            flat = np.ptp(np.asarray(pred, dtype=float)) == 0 or np.ptp(np.asarray(gold, dtype=float)) == 0
            out["pearson"] = 0.0 if flat else 100 * float(pearsonr(gold, pred)[0])
            out["spearman"] = 0.0 if flat else 100 * float(spearmanr(gold, pred)[0])
            continue
        suffix = {"validation_matched": "_matched", "validation_mismatched": "_mismatched"}.get(split, "")
        out["accuracy" + suffix] = 100 * float(accuracy_score(gold, pred))
        if "f1" in task.metrics:
            out["f1"] = 100 * float(f1_score(gold, pred, zero_division=0))
        if "matthews" in task.metrics:
            out["matthews"] = 100 * float(matthews_corrcoef(gold, pred))
    return out


def protocol(every: int, evals: list[tuple[int, float]]) -> dict:
    """What a run's record says about its evaluations, `evals` being (step, select) in order, the
    last one at the end of training: Ettin's cadence, every evaluation, the step of the best one
    (the first, on a tie), and the step the score comes from (the last: no early stopping)."""
    best = max(evals, key=lambda e: e[1])
    return {"eval_every": every, "evals": [[step, value] for step, value in evals], "best_step": best[0],
            "scored_step": evals[-1][0], "early_stopping": False, "stopped_at": None}
