"""Twin pretraining: run the recipe's phases for each twin on the HF `Trainer`.

One loop serves both twins; only the model class and the collator differ. Every phase starts
from the previous phase's weights with a fresh optimizer and its own LR schedule, writes its
end-of-phase checkpoint to `<out>/<twin>/phases/<phase>/`, and can be resumed from its last
intermediate checkpoint. `torchrun` / `accelerate launch` work unchanged: each rank takes its
slice of every step's (identical, pre-ordered) batch (`StepBatches`), so the data of a step does
not depend on the number of processes, and only the main process writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.utils import logging as hf_logging

from twinlm.data.corpus import check_sources, data_lines, phase_data, prepare_tokenizer
from twinlm.data.sampling import phase_dataset
from twinlm.data.store import TokenStore
from twinlm.errors import UserError
from twinlm.models import (
    build_config,
    build_twin,
    count_parameters,
    set_global_rope_theta,
    training_flops_per_token,
)
from twinlm.objectives import collator_for
from twinlm.outputs import claim, publish, publish_into, staging, staging_path, write_json
from twinlm.packed import keep_documents_apart
from twinlm.recipe import TWINS, Phase, Recipe
from twinlm.train.batching import StepBatches, first_item, split_batch
from twinlm.train.card import write_model_card
from twinlm.train.checkpoints import (
    COMPLETE_FILE,
    STAGING,
    checkpoints,
    clean_incomplete,
    finish_work_folder,
    rotate_checkpoints,
    step_of,
)
from twinlm.train.elastic import check_processes, resume_line, run_defining
from twinlm.train.heldout import heldout_loss, unigram_baseline
from twinlm.train.init import load_init_model, resolve_init
from twinlm.train.loss import attach_chunked_loss
from twinlm.train.memory import device_budget
from twinlm.train.metrics import StepLogger, default_peak_tflops, drop_records_after
from twinlm.train.optim import build_optimizer
from twinlm.train.preflight import check_attention
from twinlm.train.sample_rng import IndexedDataset, SeededCollator, seed_dropout
from twinlm.train.save_faults import disk_full_is_an_error, fault_point
from twinlm.train.schedules import BatchSchedule, batch_schedule, lr_multiplier, phase_steps, warmup_steps_for
from twinlm.train.twin_folder import complete_twin_folder, save_twin_folder

RECIPE_FILE = "twinlm.yaml"
DONE_FILE = "phase.json"


def process_state() -> PartialState:
    """The process group of this run. On CPU accelerate only joins a torchrun group when asked
    for `cpu=True` (gloo); a plain `PartialState()` would leave every rank thinking it is alone."""
    if torch.cuda.is_available():
        return PartialState()
    return PartialState(cpu=True, backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None)


class PhaseTrainer(Trainer):
    """The stock Trainer with the recipe's optimizer and per-phase schedule, a per-step batch
    size (batch-size warmup), and atomic, rotated checkpoints.

    Each item of the train dataset is one optimizer step's share for this process: a list of
    micro-batches (`StepBatches`). The Trainer runs with gradient_accumulation_steps=1 and this
    class accumulates over the list itself; the loss of every micro-batch is normalised by the
    label count of the whole step over all processes (`num_items_in_batch`), so a step is exactly
    the mean over its tokens whatever its size or split."""

    def __init__(self, *args, recipe: Recipe, phase: Phase, schedule: BatchSchedule, twin: str | None = None,
                 tokenizer=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.recipe, self.phase, self.schedule = recipe, phase, schedule
        self.twin, self.twin_tokenizer = twin, tokenizer

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            t = self.recipe.training
            self.optimizer = build_optimizer(self.model, t.optimizer, t.lr, t.weight_decay, t.betas, t.eps)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            warmup = warmup_steps_for(self.phase, self.schedule)
            phase = self.phase
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer or self.optimizer, lambda step: lr_multiplier(phase, step, num_training_steps, warmup)
            )
        return self.lr_scheduler

    def get_train_dataloader(self):
        # The dataset already holds each process's share of each step (StepBatches), so the
        # loader is not sharded again by accelerate; one item per optimizer step.
        a = self.args
        return torch.utils.data.DataLoader(
            self.train_dataset, batch_size=1, shuffle=False, collate_fn=first_item,
            num_workers=a.dataloader_num_workers, pin_memory=a.dataloader_pin_memory and torch.cuda.is_available(),
            persistent_workers=a.dataloader_persistent_workers and a.dataloader_num_workers > 0,
            prefetch_factor=a.dataloader_prefetch_factor if a.dataloader_num_workers > 0 else None,
        )

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        steps = []
        for _ in range(num_batches):
            try:
                steps.append(next(epoch_iterator))
            except StopIteration:
                break
        micro = [mb for step in steps for mb in step]
        return steps, self._get_num_items_in_batch(micro, device)

    def training_step(self, model, inputs, num_items_in_batch=None):
        if isinstance(inputs, dict):  # a plain batch (not from StepBatches)
            return super().training_step(model, seed_dropout(inputs, self.args.seed), num_items_in_batch)
        # Used by the Trainer only if the model cannot take num_items_in_batch (then each
        # micro-batch's mean loss gets an equal share).
        self.current_gradient_accumulation_steps = len(inputs)
        total = None
        for i, micro in enumerate(inputs):
            micro = seed_dropout(micro, self.args.seed)  # keyed by samples, not by rank (train/elastic.py)
            # Gradients are all-reduced once per step, on the last micro-batch.
            sync = contextlib.nullcontext() if i == len(inputs) - 1 else self.accelerator.no_sync(model)
            with sync:
                loss = super().training_step(model, micro, num_items_in_batch)
            total = loss if total is None else total + loss
        return total

    def floating_point_ops(self, inputs) -> float:
        if isinstance(inputs, list):
            return sum(super(PhaseTrainer, self).floating_point_ops(mb) for mb in inputs)
        return super().floating_point_ops(inputs)

    def _track_num_input_tokens(self, inputs):
        for mb in inputs if isinstance(inputs, list) else [inputs]:
            super()._track_num_input_tokens(mb)

    def _get_output_dir(self, trial=None) -> str:
        # Checkpoints are first written here, then renamed into place (see _save_checkpoint).
        return os.path.join(self.args.output_dir, STAGING)

    def _save_checkpoint(self, model, trial) -> None:
        step, work = self.state.global_step, Path(self.args.output_dir)
        name = f"checkpoint-{step}"
        staged, final = Path(self._get_output_dir()) / name, work / name
        done = checkpoints(work)
        intact = f"{done[-1].name} is intact" if done else "the phase has no earlier checkpoint (it restarts)"
        with disk_full_is_an_error(f"{self.twin or 'model'} {self.phase.name} {name}", staged, intact):
            super()._save_checkpoint(model, trial)
            # Every rank writes its RNG state into the staged folder: wait for all before the rename.
            self.accelerator.wait_for_everyone()
            if not self.args.should_save:
                return
            fault_point("state", step)
            if self.twin_tokenizer is not None:  # a plain HF folder: from_pretrained / pipeline load it as is
                complete_twin_folder(self.model, self.twin_tokenizer, self.twin, staged)
            (staged / COMPLETE_FILE).write_text(json.dumps({"step": step, "processes": self.args.world_size}))
            fault_point("marker", step)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staged, final)
        fault_point("renamed", step)
        t = self.recipe.training
        rotate_checkpoints(work, t.keep_last, t.keep_every)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        fault_point("model", self.state.global_step)  # the weights are written, nothing else yet
        super()._save_optimizer_and_scheduler(output_dir)
        fault_point("optimizer", self.state.global_step)


@dataclass
class PhaseResult:
    twin: str
    phase: str
    steps: int
    tokens: int
    seq_len: int
    global_batch: int
    train_loss: float | None
    heldout: dict = field(default_factory=dict)
    seconds: float = 0.0
    tokens_per_second: float = 0.0


def prepare_output(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber earlier results, before any work starts; with --overwrite the main
    process clears the folder while the others wait. A run is resumable once its recipe is written."""
    state = process_state()
    claim(out, overwrite, resume, resume_needs=RECIPE_FILE, main_process=state.is_main_process)
    state.wait_for_everyone()


def check_resume_recipe(recipe: Recipe, out: Path) -> None:
    import yaml

    # The micro-batch and other PER_CLUSTER settings may change (resuming on another cluster).
    saved, now = run_defining(yaml.safe_load((out / RECIPE_FILE).read_text())), run_defining(recipe.to_dict())
    if saved != now:
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise UserError(
            f"--resume: the recipe differs from the one {out} was started with (sections: {', '.join(changed)}); "
            "resume with the same recipe and --set values (only the micro-batch may change)"
        )


def pretrain(
    recipe: Recipe,
    out: str | Path,
    twins: Sequence[str] = TWINS,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: Sequence = (),
) -> list[PhaseResult]:
    """Train the requested twins through all phases; returns one result per (twin, phase)."""
    out = Path(out)
    hf_logging.disable_progress_bar()  # per-save "Writing model shards" bars drown the step lines
    bad = [t for t in twins if t not in TWINS]
    if bad or not twins:
        raise UserError(f"--twins: unknown twin {bad[0] if bad else ''!r}; valid: encoder, decoder")
    state = process_state()
    # Init checkpoints (continued pretraining) are checked against the recipe before any work.
    check_attention(recipe)
    recipe, init_sources = resolve_init(recipe, twins)
    budget = device_budget(recipe)
    # The process count first (on --resume its error names the counts the run resumes on), then
    # the memory fit: the cluster-size arithmetic, before any work.
    check_processes(recipe, state.num_processes, resume)
    for phase in recipe.phases:
        split_batch(recipe, phase, state.num_processes, budget)
    # A missing, empty, column-less or (multi-process) unprepared source fails on every rank
    # before the output folder is touched.
    check_sources(recipe, Path(recipe.data.cache_dir) if recipe.data.cache_dir else out / "data")
    prepare_output(out, resume, overwrite)
    if resume:
        check_resume_recipe(recipe, out)
    with state.main_process_first():
        out.mkdir(parents=True, exist_ok=True)
        if state.is_main_process and not resume:
            recipe.dump(out / RECIPE_FILE)
        tokenizer = prepare_tokenizer(recipe, out)
        cache = Path(recipe.data.cache_dir) if recipe.data.cache_dir else out / "data"
        stores = phase_data(recipe, tokenizer, cache)  # per phase: (store or mixture, held-out store)
    if state.is_main_process:
        print("\n".join(data_lines(recipe, stores)), flush=True)
    results = []
    for twin in twins:
        results += _train_twin(recipe, out, twin, tokenizer, stores, callbacks, init_sources.get(twin))
    return results


def _train_twin(recipe, out, twin, tokenizer, stores, callbacks, init=None) -> list[PhaseResult]:
    state = process_state()
    twin_dir = out / twin
    shape = recipe.model
    config = build_config(twin, shape, tokenizer, rope_theta=recipe.phases[0].rope_theta)
    if twin == "encoder":
        config.sparse_prediction = recipe.training.sparse_mlm_head
    attn = recipe.training.attn_implementation
    model = load_init_model(init, config, attn) if init else build_twin(twin, config, recipe.training.seed, attn)
    results, step_offset, token_offset = [], 0, 0
    for phase in recipe.phases:
        phase_dir = twin_dir / "phases" / phase.name
        work = twin_dir / "work" / phase.name
        train_store, heldout_store = stores[phase.name]
        if (phase_dir / DONE_FILE).exists():
            model = _load(twin, phase_dir, recipe)
            result = PhaseResult(**json.loads((phase_dir / DONE_FILE).read_text()))
            if state.is_main_process:  # a kill between the phase's save and its clean-up
                finish_work_folder(work, recipe.training.keep_every)
        else:
            set_global_rope_theta(model, phase.rope_theta)
            result = run_phase(recipe, out, twin, model, tokenizer, phase, phase_steps(recipe, phase), train_store,
                                heldout_store, step_offset, callbacks, evaluate=False, token_offset=token_offset)
            # The weights are saved first, so nothing after this line can lose the phase.
            if state.is_main_process:
                with disk_full_is_an_error(f"{twin} phase {phase.name}", staging_path(phase_dir),
                                           "its intermediate checkpoints are intact"):
                    _save_atomic(model, tokenizer, twin, phase_dir, result)
                finish_work_folder(work, recipe.training.keep_every)
            state.wait_for_everyone()
        if "loss" not in result.heldout:  # evaluated after the save (also when a resume finds it missing)
            t = recipe.training
            result.heldout = heldout_loss(model, twin, tokenizer, heldout_store, phase.seq_len, phase.mask_ratio,
                                          token_budget=t.heldout_tokens, precision=t.precision,
                                          document_masking=t.document_masking)
            result.heldout["unigram_baseline"] = unigram_baseline(train_store, heldout_store, len(tokenizer),
                                                                  tokenizer.all_special_ids,
                                                                  heldout_tokens=t.heldout_tokens)
            if state.is_main_process:
                write_json(phase_dir / DONE_FILE, result.__dict__)
            state.wait_for_everyone()
            if state.is_main_process:
                print(f"{twin} {phase.name}: done ({result.steps} steps, held-out loss "
                      f"{result.heldout.get('loss', float('nan')):.3f} vs unigram "
                      f"{result.heldout['unigram_baseline']:.3f})", flush=True)
        results.append(result)
        step_offset += result.steps
        token_offset += result.tokens
    if state.is_main_process:
        with disk_full_is_an_error(f"{twin} final weights", staging_path(twin_dir), "every phase's weights are intact"):
            _write_final(model, tokenizer, twin, twin_dir, recipe, results)
    state.wait_for_everyone()
    return results


def _load(twin: str, path: Path, recipe: Recipe):
    cls = AutoModelForMaskedLM if twin == "encoder" else AutoModelForCausalLM
    model = cls.from_pretrained(path, attn_implementation=recipe.training.attn_implementation)
    if twin == "encoder":
        model.config.sparse_prediction = recipe.training.sparse_mlm_head
        model.sparse_prediction = recipe.training.sparse_mlm_head
    return model


def build_phase_trainer(recipe: Recipe, work: Path, twin: str, model, tokenizer, phase: Phase, steps: int,
                        train_store: TokenStore, collator=None) -> PhaseTrainer:
    """The Trainer for one phase of one twin. `collator` defaults to the twin's objective (MLM or
    CLM); conversions pass another one (e.g. MNTP) and reuse everything else. `steps` must be the
    phase's steps (`schedules.phase_steps`), or fewer to stop early."""
    t = recipe.training
    state = process_state()
    schedule = batch_schedule(recipe, phase)
    split = split_batch(recipe, phase, state.num_processes, device_budget(recipe))
    steps = min(steps, schedule.steps)
    # One call builds the phase's sample order; item i of it is sample i of the phase.
    dataset = phase_dataset(train_store, phase.seq_len, num_samples=schedule.samples_through(steps), seed=t.seed)
    collator = collator or collator_for(twin, tokenizer, phase.mask_ratio, t.document_masking, t.attn_implementation)
    collator = SeededCollator(collator, t.seed)
    step_batches = StepBatches(IndexedDataset(dataset), schedule, split.micro_batch, collator,
                               rank=state.process_index, processes=state.num_processes, steps=steps)
    args = TrainingArguments(
        output_dir=str(work),
        max_steps=steps,
        per_device_train_batch_size=1,  # one item = this process's share of one optimizer step
        gradient_accumulation_steps=1,  # accumulation happens inside PhaseTrainer.training_step
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        logging_steps=max(1, min(t.log_every, steps)),
        save_strategy="steps",
        save_steps=t.save_every,
        seed=t.seed,
        data_seed=t.seed,
        activation_checkpointing=t.activation_checkpointing,  # recompute layers in backward
        bf16=t.precision == "bf16",
        report_to=t.report_to or "none",
        remove_unused_columns=False,
        disable_tqdm=True,
        torch_compile=t.compile,
        dataloader_num_workers=t.dataloader_workers,
        use_cpu=not torch.cuda.is_available(),
        ddp_backend="gloo" if not torch.cuda.is_available() and state.num_processes > 1 else None,
    )
    if t.document_masking:
        keep_documents_apart(model)
    attach_chunked_loss(model, t.loss_chunk)
    trainer = PhaseTrainer(
        model=model, args=args, train_dataset=step_batches, data_collator=first_item,
        recipe=recipe, phase=phase, schedule=schedule, twin=twin, tokenizer=tokenizer,
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def run_phase(recipe, out, twin, model, tokenizer, phase, steps, train_store: TokenStore,
               heldout_store: TokenStore, step_offset, callbacks, collator=None, evaluate: bool = True,
               token_offset: int | None = None) -> PhaseResult:
    """Train one phase (resuming from its newest complete checkpoint); with `evaluate`, also
    measure the held-out loss (pretraining does that after saving the phase instead)."""
    t = recipe.training
    state = process_state()
    work = out / twin / "work" / phase.name
    if state.is_main_process:
        clean_incomplete(work)  # never resume from, or trip over, a half-written checkpoint
    state.wait_for_everyone()
    trainer = build_phase_trainer(recipe, work, twin, model, tokenizer, phase, steps, train_store, collator)
    schedule = trainer.schedule
    head_fraction = phase.mask_ratio if (twin == "encoder" and t.sparse_mlm_head) else 1.0
    flops = training_flops_per_token(recipe.model, model.config.vocab_size, phase.seq_len, head_fraction)
    metrics_path = out / "metrics.jsonl"
    done = checkpoints(work)
    resume_from = str(done[-1]) if done else None
    start_step = step_of(done[-1]) if done else 0
    if state.is_main_process:  # log lines past the checkpoint (or all, without one) are re-done
        drop_records_after(metrics_path, twin, phase.name, start_step)
        if done:
            print(resume_line(twin, phase.name, done[-1], schedule, state.num_processes,
                              trainer.train_dataset.micro_batch), flush=True)
    logger = StepLogger(metrics_path, twin, phase.name, schedule, flops,
                        t.peak_tflops or default_peak_tflops(t.precision), state.num_processes, step_offset,
                        token_offset if token_offset is not None else step_offset * recipe.batch_of(phase) * phase.seq_len)
    trainer.callback_handler.callbacks.insert(0, logger)
    for cb in callbacks:
        trainer.add_callback(cb)
    start = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - start
    steps = trainer.args.max_steps
    heldout = heldout_loss(model, twin, tokenizer, heldout_store, phase.seq_len, phase.mask_ratio,
                           token_budget=t.heldout_tokens, precision=t.precision,
                           document_masking=t.document_masking) if evaluate else {}
    trained_tokens = schedule.tokens_through(steps) - schedule.tokens_through(start_step)
    return PhaseResult(
        twin=twin, phase=phase.name, steps=steps, tokens=schedule.tokens_through(steps), seq_len=phase.seq_len,
        global_batch=recipe.batch_of(phase), train_loss=output.training_loss, heldout=heldout,
        seconds=round(seconds, 2), tokens_per_second=round(trained_tokens / max(seconds, 1e-9), 1),
    )


def _save_atomic(model, tokenizer, twin: str, phase_dir: Path, result: PhaseResult) -> None:
    tmp = staging(phase_dir)
    save_twin_folder(model, tokenizer, twin, tmp)
    write_json(tmp / DONE_FILE, result.__dict__)
    publish(tmp, phase_dir)


def _write_final(model, tokenizer, twin, twin_dir: Path, recipe: Recipe, results: list[PhaseResult]) -> None:
    """The twin's top folder: the last phase's weights, the resolved recipe and a model card.
    Files are written to a staging folder and moved into place one by one (the twin's folder also
    holds the phases)."""
    tmp = staging(twin_dir)
    save_twin_folder(model, tokenizer, twin, tmp)
    recipe.dump(tmp / RECIPE_FILE)
    write_model_card(tmp / "README.md", twin, recipe, results, count_parameters(model))
    publish_into(tmp, twin_dir)
