"""Twin pretraining: run the recipe's phases for each twin on the HF `Trainer`.

One loop serves both twins; only the model class and the collator differ. Every phase starts
from the previous phase's weights with a fresh optimizer and its own LR schedule, writes its
end-of-phase checkpoint to `<out>/<twin>/phases/<phase>/`, and can be resumed from its last
intermediate checkpoint. `torchrun` / `accelerate launch` work unchanged: the Trainer shards
the (identical, pre-ordered) batches across ranks and only the main process writes.
"""

from __future__ import annotations

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
from twinlm.data.mixture import phase_dataset
from twinlm.data.packing import TokenStore
from twinlm.data.tokenizer import for_twin
from twinlm.errors import UserError
from twinlm.models import (
    build_config,
    build_twin,
    count_parameters,
    set_global_rope_theta,
    training_flops_per_token,
)
from twinlm.objectives import collator_for
from twinlm.packed import keep_documents_apart
from twinlm.recipe import TWINS, Phase, Recipe
from twinlm.train.card import write_model_card
from twinlm.train.heldout import heldout_loss, unigram_baseline
from twinlm.train.loss import attach_chunked_loss
from twinlm.train.metrics import StepLogger, default_peak_tflops, drop_records_after
from twinlm.train.optim import build_optimizer
from twinlm.train.schedules import lr_multiplier, warmup_steps_for

RECIPE_FILE = "twinlm.yaml"
DONE_FILE = "phase.json"


def process_state() -> PartialState:
    """The process group of this run. On CPU accelerate only joins a torchrun group when asked
    for `cpu=True` (gloo); a plain `PartialState()` would leave every rank thinking it is alone."""
    if torch.cuda.is_available():
        return PartialState()
    return PartialState(cpu=True, backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None)


class PhaseTrainer(Trainer):
    """The stock Trainer with the recipe's optimizer and per-phase schedule, and atomic checkpoints."""

    def __init__(self, *args, recipe: Recipe, phase: Phase, tokens_per_step: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.recipe, self.phase, self.tokens_per_step = recipe, phase, tokens_per_step

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            t = self.recipe.training
            self.optimizer = build_optimizer(self.model, t.optimizer, t.lr, t.weight_decay, t.betas, t.eps)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            warmup = warmup_steps_for(self.phase, self.tokens_per_step)
            phase = self.phase
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer or self.optimizer, lambda step: lr_multiplier(phase, step, num_training_steps, warmup)
            )
        return self.lr_scheduler

    def _get_output_dir(self, trial=None) -> str:
        # Checkpoints are first written here, then renamed into place (see _save_checkpoint).
        return os.path.join(self.args.output_dir, ".staging")

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        if not self.args.should_save:
            return
        name = f"checkpoint-{self.state.global_step}"
        final = Path(self.args.output_dir) / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(Path(self._get_output_dir()) / name, final)
        for old in sorted(checkpoints(Path(self.args.output_dir)))[:-2]:
            shutil.rmtree(old, ignore_errors=True)


SAMPLE_KEY = "sample_index"


class IndexedDataset(torch.utils.data.Dataset):
    """The items of `dataset`, each with its position under SAMPLE_KEY (see SeededCollator)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return {**self.dataset[i], SAMPLE_KEY: i}


class SeededCollator:
    """Runs `collator` (MLM / MNTP masking draws from the global torch RNG) with that RNG seeded
    from the run's seed and the index of the batch's first sample, inside `fork_rng`.

    The masks are then a function of the data alone, so a resumed phase sees exactly the masks of
    an uninterrupted one. (The Trainer's own RNG checkpointing cannot give that: the dataloader
    collates batches ahead, and the Trainer restores the saved state only after collating the
    first resumed batches.) The global stream used by the model (dropout) is left untouched."""

    def __init__(self, collator, seed: int):
        self.collator, self.seed = collator, seed

    def __call__(self, examples: list[dict]) -> dict:
        first = int(examples[0][SAMPLE_KEY])
        examples = [{k: v for k, v in e.items() if k != SAMPLE_KEY} for e in examples]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed % 2**31) * 2**32 + first)
            return self.collator(examples)


def checkpoints(work: Path) -> list[Path]:
    """Complete intermediate checkpoints of a phase, oldest first."""
    found = [p for p in work.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


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
    """Refuse to clobber earlier results; say so before any work starts."""
    if resume:
        if not (out / RECIPE_FILE).exists():
            raise UserError(f"--resume: nothing to resume in {out} (no {RECIPE_FILE}); start without --resume")
        return
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"output folder {out} exists; pass --overwrite to replace it or --resume to continue it")
        if process_state().is_main_process:
            shutil.rmtree(out)
    process_state().wait_for_everyone()


def check_resume_recipe(recipe: Recipe, out: Path) -> None:
    import yaml

    saved = yaml.safe_load((out / RECIPE_FILE).read_text())
    if saved != recipe.to_dict():
        changed = sorted(k for k in set(saved) | set(recipe.to_dict()) if saved.get(k) != recipe.to_dict().get(k))
        raise UserError(
            f"--resume: the recipe differs from the one {out} was started with (sections: {', '.join(changed)}); "
            "resume with the same recipe and --set values"
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
    # A missing, empty, column-less or (multi-process) unprepared source fails on every rank
    # before the output folder is touched.
    check_sources(recipe, Path(recipe.data.cache_dir) if recipe.data.cache_dir else out / "data")
    prepare_output(out, resume, overwrite)
    if resume:
        check_resume_recipe(recipe, out)
    state = process_state()
    world = state.num_processes
    for phase in recipe.phases:
        if recipe.batch_of(phase) % (recipe.training.micro_batch * world):
            raise UserError(
                f"phase {phase.name}: global batch {recipe.batch_of(phase)} is not divisible by "
                f"micro_batch {recipe.training.micro_batch} x {world} processes"
            )
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
        results += _train_twin(recipe, out, twin, tokenizer, stores, callbacks)
    return results


def _train_twin(recipe, out, twin, tokenizer, stores, callbacks) -> list[PhaseResult]:
    state = process_state()
    twin_dir = out / twin
    shape = recipe.model
    config = build_config(twin, shape, tokenizer, rope_theta=recipe.phases[0].rope_theta)
    if twin == "encoder":
        config.sparse_prediction = recipe.training.sparse_mlm_head
    model = build_twin(twin, config, recipe.training.seed, recipe.training.attn_implementation)
    results, step_offset = [], 0
    for phase in recipe.phases:
        phase_dir = twin_dir / "phases" / phase.name
        steps = recipe.phase_steps(phase)
        if (phase_dir / DONE_FILE).exists():
            model = _load(twin, phase_dir, recipe)
            results.append(PhaseResult(**json.loads((phase_dir / DONE_FILE).read_text())))
            step_offset += steps
            continue
        set_global_rope_theta(model, phase.rope_theta)
        train_store, heldout_store = stores[phase.name]
        result = _run_phase(recipe, out, twin, model, tokenizer, phase, steps, train_store, heldout_store,
                            step_offset, callbacks)
        baseline = unigram_baseline(train_store, heldout_store, len(tokenizer), tokenizer.all_special_ids,
                                    heldout_tokens=recipe.training.heldout_tokens)
        result.heldout["unigram_baseline"] = baseline
        if state.is_main_process:
            _save_atomic(model, tokenizer, twin, phase_dir, result)
            # The phase is complete: its optimizer states are no longer needed for resume.
            shutil.rmtree(twin_dir / "work" / phase.name, ignore_errors=True)
        state.wait_for_everyone()
        results.append(result)
        step_offset += steps
        print(f"{twin} {phase.name}: done ({result.steps} steps, held-out loss "
              f"{result.heldout.get('loss', float('nan')):.3f} vs unigram {baseline:.3f})", flush=True)
    if state.is_main_process:
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
    CLM); conversions pass another one (e.g. MNTP) and reuse everything else."""
    t = recipe.training
    state = process_state()
    batch = recipe.batch_of(phase)
    dataset = phase_dataset(train_store, phase.seq_len, num_samples=steps * batch, seed=t.seed)
    args = TrainingArguments(
        output_dir=str(work),
        max_steps=steps,
        per_device_train_batch_size=t.micro_batch,
        gradient_accumulation_steps=batch // (t.micro_batch * state.num_processes),
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        logging_steps=max(1, min(t.log_every, steps)),
        save_strategy="steps",
        save_steps=t.save_every,
        seed=t.seed,
        data_seed=t.seed,
        train_sampling_strategy="sequential",  # the order is fixed by BlockDataset, identical for both twins
        bf16=t.precision == "bf16",
        report_to=t.report_to or "none",
        remove_unused_columns=False,
        dataloader_drop_last=True,
        disable_tqdm=True,
        torch_compile=t.compile,
        dataloader_num_workers=t.dataloader_workers,
        use_cpu=not torch.cuda.is_available(),
        ddp_backend="gloo" if not torch.cuda.is_available() and state.num_processes > 1 else None,
    )
    collator = collator or collator_for(twin, tokenizer, phase.mask_ratio, t.document_masking, t.attn_implementation)
    if t.document_masking:
        keep_documents_apart(model)
    attach_chunked_loss(model, t.loss_chunk)
    trainer = PhaseTrainer(
        model=model, args=args, train_dataset=IndexedDataset(dataset),
        data_collator=SeededCollator(collator, t.seed),
        recipe=recipe, phase=phase, tokens_per_step=batch * phase.seq_len,
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def _run_phase(recipe, out, twin, model, tokenizer, phase, steps, train_store: TokenStore,
               heldout_store: TokenStore, step_offset, callbacks, collator=None) -> PhaseResult:
    t = recipe.training
    state = process_state()
    batch = recipe.batch_of(phase)
    tokens_per_step = batch * phase.seq_len
    work = out / twin / "work" / phase.name
    trainer = build_phase_trainer(recipe, work, twin, model, tokenizer, phase, steps, train_store, collator)
    head_fraction = phase.mask_ratio if (twin == "encoder" and t.sparse_mlm_head) else 1.0
    flops = training_flops_per_token(recipe.model, model.config.vocab_size, phase.seq_len, head_fraction)
    metrics_path = out / "metrics.jsonl"
    done = checkpoints(work)
    resume_from = str(done[-1]) if done else None
    if state.is_main_process:  # log lines past the checkpoint (or all, without one) are re-done
        drop_records_after(metrics_path, twin, phase.name, int(done[-1].name.split("-")[1]) if done else 0)
    logger = StepLogger(metrics_path, twin, phase.name, tokens_per_step, flops,
                        t.peak_tflops or default_peak_tflops(t.precision), state.num_processes, step_offset)
    trainer.callback_handler.callbacks.insert(0, logger)
    for cb in callbacks:
        trainer.add_callback(cb)
    start = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - start
    heldout = heldout_loss(model, twin, tokenizer, heldout_store, phase.seq_len, phase.mask_ratio,
                           token_budget=t.heldout_tokens, precision=t.precision, document_masking=t.document_masking)
    return PhaseResult(
        twin=twin, phase=phase.name, steps=steps, tokens=steps * tokens_per_step, seq_len=phase.seq_len,
        global_batch=batch, train_loss=output.training_loss, heldout=heldout, seconds=round(seconds, 2),
        tokens_per_second=round(output.metrics.get("train_samples_per_second", 0.0) * phase.seq_len, 1),
    )


def _save_pretrained(model, tokenizer, twin: str, path: Path) -> None:
    """A plain HF folder: weights with the sparse MLM head switched off, the twin's tokenizer."""
    sparse = getattr(model.config, "sparse_prediction", None)
    if sparse is not None:
        model.config.sparse_prediction = False
    model.save_pretrained(path)
    if sparse is not None:
        model.config.sparse_prediction = sparse
    for_twin(tokenizer, twin).save_pretrained(path)
    if twin == "decoder":
        model.generation_config.bos_token_id = tokenizer.cls_token_id
        model.generation_config.eos_token_id = tokenizer.sep_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.save_pretrained(path)


def _save_atomic(model, tokenizer, twin: str, phase_dir: Path, result: PhaseResult) -> None:
    tmp = phase_dir.with_name(phase_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _save_pretrained(model, tokenizer, twin, tmp)
    (tmp / DONE_FILE).write_text(json.dumps(result.__dict__, indent=1))
    shutil.rmtree(phase_dir, ignore_errors=True)
    os.replace(tmp, phase_dir)


def _write_final(model, tokenizer, twin, twin_dir: Path, recipe: Recipe, results: list[PhaseResult]) -> None:
    """The twin's top folder: the last phase's weights, the resolved recipe and a model card.
    Files are written to a temporary folder and renamed into place one by one."""
    tmp = twin_dir / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _save_pretrained(model, tokenizer, twin, tmp)
    recipe.dump(tmp / RECIPE_FILE)
    write_model_card(tmp / "README.md", twin, recipe, results, count_parameters(model))
    for item in tmp.iterdir():
        os.replace(item, twin_dir / item.name)
    tmp.rmdir()
