"""Comparison tasks as training-time evaluators: a `TrainerCallback` that scores the model being
trained every N steps (and at the end) with any zero-shot task (intrinsic, choice, bias).

Tasks that fine-tune a copy of the model (classification, retrieval) are refused here: running
them inside a training loop would cost more than the training itself; evaluate checkpoints with
`twinlm eval` instead.
"""

from __future__ import annotations

from transformers import TrainerCallback

from twinlm.errors import UserError


class TaskEvaluatorCallback(TrainerCallback):
    """Adds `<task>/<metric>` entries to the Trainer's log history and keeps them in `history`."""

    def __init__(self, task, tokenizer, architecture: str, every: int = 100, prediction_offset: int = 0):
        if getattr(task, "finetunes", False):
            raise UserError(f"task {task.name!r} fine-tunes a copy of the model; use a zero-shot task "
                            "(intrinsic, choice, bias) as a training-time evaluator")
        if every < 1:
            raise UserError(f"every must be >= 1, got {every}")
        self.task, self.tokenizer, self.architecture, self.every = task, tokenizer, architecture, every
        self.prediction_offset = prediction_offset  # -1 while training an encoder with MNTP
        self.history: list[dict] = []

    def _evaluate(self, state, model) -> None:
        if model is None or (self.history and self.history[-1]["step"] == state.global_step):
            return
        scores = self.task.evaluate(model, self.tokenizer, self.architecture, prediction_offset=self.prediction_offset)
        entry = {"step": state.global_step, **{f"{self.task.name}/{k}": v for k, v in scores.items()}}
        self.history.append(entry)
        state.log_history.append(entry)
        if state.is_world_process_zero:
            key = f"{self.task.name}/{self.task.primary(self.architecture)}"
            print(f"eval step {state.global_step}: {key} {entry[key]:.4f}", flush=True)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0:
            self._evaluate(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._evaluate(state, model)
