"""Binary classifier optimization (BCO) on the HF `Trainer`: unpaired thumbs-up/down alignment.

TRL dropped its BCO trainer in 1.14, so twinlm keeps its own, following the BCO paper and
ETTIN-FACTS §5. For each (prompt, completion, label) row the implicit reward is
r = beta * (log pi(y|x) - log pi_ref(y|x)) summed over completion tokens; delta is the running
mean of every reward seen in training; desirable rows get -log sigmoid(r - delta), undesirable
ones -log sigmoid(-(r - delta)), optionally weighted by UDM density ratios. delta (and the UDM
classifier) is written into every checkpoint and restored on resume, so an interrupted run
continues with the statistics it had.
"""

from __future__ import annotations

import copy
import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer
from transformers.trainer_utils import get_last_checkpoint

from twinlm.align.bco_config import BCOConfig
from twinlm.align.bco_data import BCOCollator, encode_rows, sequence_logps
from twinlm.align.data import check_bco_rows, load_rows
from twinlm.align.udm import Embedder, UDMClassifier, fit_udm, sentence_embedder
from twinlm.errors import UserError

STATE_FILE = "bco_state.json"


def bco_losses(logps: torch.Tensor, ref_logps: torch.Tensor, label: torch.Tensor, delta: float | torch.Tensor,
               beta: float, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row BCO losses (UDM weights applied to undesirable rows) and the rewards."""
    rewards = beta * (logps - ref_logps)
    losses = torch.where(label, -F.logsigmoid(rewards - delta), -F.logsigmoid(-(rewards - delta)))
    if weights is not None:
        losses = losses * torch.where(label, torch.ones_like(weights), weights)
    return losses, rewards


class RunningMean:
    """Mean of every value seen so far; a JSON-able state so it survives checkpoints."""

    def __init__(self, mean: float = 0.0, count: int = 0):
        self.mean, self.count = mean, count

    def update(self, values: torch.Tensor) -> None:
        n = values.numel()
        if n:
            self.mean = (self.mean * self.count + float(values.double().sum())) / (self.count + n)
            self.count += n


class BCOTrainer(Trainer):
    """`Trainer` whose loss is BCO. `train_dataset` rows: prompt, completion, label (bool).

    Reference model, in order of precedence: `ref_model`; for a peft model, the same model with
    its adapters disabled; else a frozen copy of the initial policy. With
    `args.precompute_ref_log_probs` the reference log-probs are computed once and the reference
    is dropped. With `args.udm`, `embed` (or `args.udm_embedder`) embeds prompts for UDM.
    """

    def __init__(self, model: PreTrainedModel, args: BCOConfig, train_dataset: Dataset | list[dict],
                 processing_class: PreTrainedTokenizerBase, ref_model: PreTrainedModel | None = None,
                 eval_dataset: Dataset | list[dict] | None = None, embed: Embedder | None = None, callbacks=None):
        train_dataset = load_rows(train_dataset)
        check_bco_rows(train_dataset, "BCO training data")
        if args.udm and embed is None and args.udm_embedder is None:
            raise UserError("UDM needs a prompt embedding model: set udm_embedder (an encoder or sentence-transformers model)")
        self.raw_prompts = list(train_dataset["prompt"])
        train = encode_rows(train_dataset, processing_class, args.max_length, args.max_prompt_length)
        evals = None
        if eval_dataset is not None:
            eval_dataset = load_rows(eval_dataset)
            check_bco_rows(eval_dataset, "BCO evaluation data")
            evals = encode_rows(eval_dataset, processing_class, args.max_length, args.max_prompt_length)
        from peft import PeftModel

        self.is_peft = isinstance(model, PeftModel)
        if ref_model is None and not self.is_peft:
            ref_model = copy.deepcopy(model)
        if ref_model is not None:
            ref_model.eval().requires_grad_(False)
        self.ref_model = ref_model
        self.running = RunningMean()
        self.udm: UDMClassifier | None = None
        self._embed = embed
        self._stats: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        super().__init__(model=model, args=args, train_dataset=train, eval_dataset=evals,
                         processing_class=processing_class, data_collator=BCOCollator(processing_class.pad_token_id),
                         callbacks=callbacks)
        self.model_accepts_loss_kwargs = False  # the Trainer then averages the loss over accumulation steps
        self.is_moe = getattr(self.model.config, "output_router_logits", None) is not None
        if args.precompute_ref_log_probs:
            self.train_dataset = self._with_ref_logps(self.train_dataset)
            if self.eval_dataset is not None:
                self.eval_dataset = self._with_ref_logps(self.eval_dataset)
            self.ref_model = None
        elif self.ref_model is not None:
            self.ref_model.to(self.args.device)

    # ---- reference log-probs --------------------------------------------------------------

    @torch.no_grad()
    def _reference_logps(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "ref_logps" in batch:
            return batch["ref_logps"]
        args = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        if self.ref_model is not None:
            logits = self.ref_model(**args).logits
        else:
            with self.accelerator.unwrap_model(model).disable_adapter():
                logits = model(**args).logits
        return sequence_logps(logits, batch["input_ids"], batch["completion_mask"])

    def _with_ref_logps(self, data: Dataset) -> Dataset:
        model = self.model if self.ref_model is None else self.ref_model
        was_training = model.training
        model.eval()
        collate = BCOCollator(self.processing_class.pad_token_id)
        values = []
        for start in range(0, len(data), self.args.per_device_eval_batch_size):
            batch = collate([data[i] for i in range(start, min(start + self.args.per_device_eval_batch_size, len(data)))])
            batch = {k: v.to(self.args.device) for k, v in batch.items()}
            values += self._reference_logps(model, batch).cpu().tolist()
        model.train(was_training)
        return data.add_column("ref_logps", values)

    # ---- UDM ------------------------------------------------------------------------------

    def _embedder(self) -> Embedder:
        if self._embed is None:
            self._embed = sentence_embedder(self.args.udm_embedder)
        return self._embed

    def _apply_udm(self, checkpoint: str | None) -> None:
        """Fit the classifier (or reload it from `checkpoint`) and weight every row by it."""
        if checkpoint is not None:
            self.udm = UDMClassifier.load(checkpoint)
        elif self.udm is None:
            labels = self.train_dataset["label"]
            texts = self.train_dataset["prompt_text"]
            self.udm = fit_udm([t for t, y in zip(texts, labels) if y], [t for t, y in zip(texts, labels) if not y],
                               self._embedder(), self.args.prompt_sample_size, self.args.min_density_ratio,
                               self.args.max_density_ratio, seed=self.args.seed)
        weights = self.udm.weights(self._embedder()(list(self.train_dataset["prompt_text"])))
        data = self.train_dataset
        if "udm_weight" in data.column_names:
            data = data.remove_columns("udm_weight")
        self.train_dataset = data.add_column("udm_weight", [float(w) for w in weights])

    # ---- training -------------------------------------------------------------------------

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise UserError(f"nothing to resume: no checkpoint in {self.args.output_dir}")
        if resume_from_checkpoint:
            state = Path(resume_from_checkpoint) / STATE_FILE
            if not state.exists():
                raise UserError(f"{resume_from_checkpoint} has no {STATE_FILE}; it is not a twinlm BCO checkpoint")
            saved = json.loads(state.read_text())
            self.running = RunningMean(saved["delta"], saved["count"])
        if self.args.udm:
            self._apply_udm(resume_from_checkpoint or None)
        return super().train(resume_from_checkpoint=resume_from_checkpoint or None, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if model.training else "eval"
        extra = {"output_router_logits": True} if self.is_moe else {}
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], **extra)
        logps = sequence_logps(outputs.logits, inputs["input_ids"], inputs["completion_mask"])
        ref_logps = self._reference_logps(model, inputs)
        label = inputs["label"]
        rewards = self.args.beta * (logps - ref_logps).detach()
        if mode == "train":  # delta follows the training rewards only
            self.running.update(self.accelerator.gather(rewards))
        losses, rewards = bco_losses(logps, ref_logps, label, self.running.mean, self.args.beta, inputs.get("udm_weight"))
        loss = losses.mean()
        aux = getattr(outputs, "aux_loss", None)
        if self.is_moe and aux is not None:
            loss = loss + self.args.router_aux_loss_coef * aux
        self._record(mode, rewards.detach(), logps.detach(), label)
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # ---- metrics and checkpoints ----------------------------------------------------------

    def _record(self, mode: str, rewards: torch.Tensor, logps: torch.Tensor, label: torch.Tensor) -> None:
        stats = self._stats[mode]
        for name, keep in (("desirable", label), ("undesirable", ~label)):
            if keep.any():
                stats[f"rewards/{name}"].append(float(rewards[keep].mean()))
                stats[f"logps/{name}"].append(float(logps[keep].mean()))
        if label.any() and (~label).any():
            stats["rewards/margins"].append(float(rewards[label].mean() - rewards[~label].mean()))
        stats["delta"].append(self.running.mean)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if "loss" in logs or not any(k.startswith("eval_") for k in logs) else "eval"
        prefix = "eval_" if mode == "eval" else ""
        for key, values in self._stats[mode].items():
            logs[prefix + key] = float(np.mean(values))
        if self.udm is not None and mode == "train":
            logs["udm/accuracy"] = self.udm.accuracy
        self._stats[mode].clear()
        super().log(logs, start_time)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            self.save_bco_state(output_dir or self.args.output_dir)

    def save_bco_state(self, folder: str | Path) -> None:
        """delta (bco_state.json) and the UDM classifier: what a resumed run needs besides the Trainer's state."""
        os.makedirs(folder, exist_ok=True)
        state = {"delta": self.running.mean, "count": self.running.count, "beta": self.args.beta}
        (Path(folder) / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")
        if self.udm is not None:
            self.udm.save(folder)
