"""The field's own benchmarks, run by the field's own harnesses.

lm-evaluation-harness (`--lm-eval`): the harness itself runs the tasks, by name (its task
registry; the hub datasets need the network) or from local task YAMLs (a file or a folder of them,
e.g. `dataset_path: json` with `dataset_kwargs.data_files`, offline). Decoders are scored by the
harness's own `HFLM`, so their numbers are the harness's; encoders by twinlm's `twinlm-encoder`
model class (`lm_eval_encoder.py`) under Ettin's protocol or classic PLL. Results go to each
model's `benchmarks["lm_eval"][task]` (`acc`, `acc_norm`, `n`, ...), and every item's scores to
`lm_eval/<model>/<task>.jsonl` beside results.json (the harness's `--log_samples`).

MTEB (`--mteb`): the mteb package itself, on its retrieval tasks by name or on BEIR-layout folders
(`mteb_local.py`); a sentence-transformers model as it is, any other after fine-tuning into one.
Results go to each model's `benchmarks["mteb"][task]`."""

from __future__ import annotations

import difflib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from twinlm.errors import UserError
from twinlm.evaluate import mteb_local
from twinlm.evaluate.lm_eval_encoder import EncoderLM
from twinlm.evaluate.models import ModelRef, world_for
from twinlm.evaluate.mteb_local import load_tasks
from twinlm.evaluate.runner import build_tasks


@dataclass
class LmEvalPlan:
    """The harness's task names to run and the task manager that knows them (local folders
    indexed, built-in tasks only when a name needs them)."""

    tasks: list[str]
    include: list[str] = field(default_factory=list)
    manager: object = None


def need(module: str, flag: str) -> None:
    """A one-line error when the harness behind `flag` is not installed (it is the `eval` extra)."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UserError(f"{flag} needs the {module} package: pip install 'twinlm[eval]'")


def _local_tasks(manager, path: Path) -> list[str]:
    """Task (and group) names defined by the YAML file `path`, or by the YAMLs under a folder."""
    from lm_eval.tasks._index import Kind

    path = path.resolve()
    names = []
    for name, entry in manager.task_index.items():
        if entry.yaml_path is None or entry.kind not in (Kind.TASK, Kind.GROUP, Kind.PY_TASK):
            continue
        where = Path(entry.yaml_path).resolve()
        if where == path or (path.is_dir() and path in where.parents):
            names.append(name)
    return names


def plan_lm_eval(specs: list[str], log=print) -> LmEvalPlan:
    """Resolve `--lm-eval` entries (task names, task YAML files, folders of task YAMLs) and load
    every task's data once, so a misspelt name or a missing data file fails in one line before
    any model is evaluated."""
    import logging

    need("lm_eval", "--lm-eval")
    specs = [s.strip() for s in specs if s.strip()]
    if not specs:
        raise UserError("--lm-eval needs task names or task YAML files, e.g. --lm-eval arc_easy or --lm-eval tasks/my_task.yaml")
    local = [Path(s) for s in specs if Path(s).exists()]
    names = [s for s in specs if not Path(s).exists()]
    bad = [p for p in local if p.is_file() and p.suffix not in (".yaml", ".yml")]
    if bad:
        raise UserError(f"--lm-eval {bad[0]}: a local task must be a task YAML file (.yaml) or a folder of them")
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    from lm_eval.tasks import TaskManager

    include = sorted({str((p if p.is_dir() else p.parent).resolve()) for p in local})
    if names:
        log("indexing lm-evaluation-harness's task registry")
    manager = TaskManager(include_path=include or None, include_defaults=bool(names))
    tasks = []
    for path in local:
        found = _local_tasks(manager, path)
        if not found:
            raise UserError(f"--lm-eval {path}: no lm-eval task there (a task YAML names itself with `task: NAME`)")
        tasks += [t for t in found if t not in tasks]
    for name in names:
        if name not in manager.all_tasks:
            close = difflib.get_close_matches(name, manager.all_tasks, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UserError(f"--lm-eval {name}: not a task YAML path nor a task of lm-evaluation-harness{hint}")
        tasks.append(name)
    try:
        manager.load_task_or_group(tasks)
    except Exception as err:  # data that cannot be read: missing files, no network for hub data
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = (" (lm-eval reads dataset_kwargs.data_files relative to the current folder: give absolute paths "
                "or run from the task's folder)") if "find" in first.lower() or "not found" in first.lower() else ""
        raise UserError(f"--lm-eval: cannot load the data of {', '.join(tasks)}: {first}{hint}") from None
    return LmEvalPlan(tasks, include, manager)


class ProgressLine:
    """One line per run, rewritten in place with a count and an ETA (a start and an end line when
    the output is not a terminal)."""

    def __init__(self, label: str, stream=None):
        self.label, self.stream = label, stream or sys.stdout
        self.started = self.shown = time.perf_counter()
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        print(f"{label}: started", file=self.stream, flush=True)

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if not self.tty or (now - self.shown < 0.5 and done < total):
            return
        self.shown = now
        rate = done / max(now - self.started, 1e-9)
        eta = (total - done) / rate if rate > 0 else 0.0
        print(f"\r{self.label}: {done}/{total} ({100 * done / max(total, 1):.0f}%), ETA {int(eta) // 60}:{int(eta) % 60:02d}  ",
              end="", file=self.stream, flush=True)

    def close(self) -> float:
        seconds = time.perf_counter() - self.started
        print(("\r" if self.tty else "") + f"{self.label}: done in {seconds:.1f} s" + " " * 20, file=self.stream, flush=True)
        return seconds


def _harness_model(model: dict, scoring: str, batch_size: int, progress, add_bos_token: bool | None = None):
    """(the harness's LM instance, its registry name, the model_args that rebuild it).
    `add_bos_token`: None leaves each model class's own default (HFLM: the tokenizer's)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    bos = {} if add_bos_token is None else {"add_bos_token": add_bos_token}
    if model["architecture"] == "decoder":
        from lm_eval.models.huggingface import HFLM

        lm = HFLM(pretrained=model["path"], batch_size=batch_size, device=device, **bos)
        call = lm._model_call

        def counted(inps, *args, **kwargs):  # the harness's bars are off: count its forward passes
            counted.done += int(inps.shape[0])
            progress(min(counted.done, counted.total), counted.total)
            return call(inps, *args, **kwargs)

        counted.done, counted.total = 0, 0
        lm._model_call = counted
        loglikelihood = lm.loglikelihood

        def announced(requests, *args, **kwargs):
            counted.total += len(requests)
            return loglikelihood(requests, *args, **kwargs)

        lm.loglikelihood = announced
        return lm, "hf", f"pretrained={model['path']}" + "".join(f",{k}={v}" for k, v in bos.items())
    import twinlm.evaluate.lm_eval_encoder  # noqa: F401  (registers twinlm-encoder with the harness)

    offset = model.get("prediction_offset", 0)
    lm = EncoderLM(model["path"], scoring=scoring, prediction_offset=offset, batch_size=batch_size, device=device,
                   progress=progress, **bos)
    args = (f"pretrained={model['path']},scoring={scoring}" + (f",prediction_offset={offset}" if offset else "")
            + "".join(f",{k}={v}" for k, v in bos.items()))
    return lm, "twinlm-encoder", args


def _metrics(values: dict) -> dict:
    """The harness's "acc,none" keys as "acc" (other filters keep their suffix)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and "," in key:
            metric, filt = key.split(",", 1)
            out[metric if filt == "none" else key] = None if value == "N/A" else float(value)
    return out


def _write_samples(folder: Path, task: str, samples: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{task}.jsonl").open("w") as f:
        for s in samples:
            row = {"doc_id": s["doc_id"], "target": s["target"],
                   "scores": [r[0] if isinstance(r, (list, tuple)) else r for r in s["filtered_resps"]]}
            row.update({m: s[m] for m in s.get("metrics", []) if m in s})
            f.write(json.dumps(row, default=str) + "\n")


def run_lm_eval(model: dict, plan: LmEvalPlan, scoring: str = "ettin", batch_size: int = 8,
                limit: int | None = None, out: Path | None = None, add_bos_token: bool | None = None) -> dict:
    """{"lm_eval": {task: {"acc", "acc_norm", ..., "n", "harness", "model", "model_args"}}}: the
    harness's own `simple_evaluate` on a model instance; per-item scores to out/lm_eval/<model>/."""
    import lm_eval
    from lm_eval import simple_evaluate

    label = f"  [{model['name']}] lm-eval " + ("" if model["architecture"] == "decoder" else f"({scoring}) ") + ", ".join(plan.tasks)
    line = ProgressLine(label)
    lm, registry_name, model_args = _harness_model(model, scoring, batch_size, line, add_bos_token)
    results = _quietly(lambda: simple_evaluate(model=lm, tasks=plan.tasks, task_manager=plan.manager, limit=limit,
                                               log_samples=True))
    seconds = line.close()
    out_tasks = {}
    for task, values in results["results"].items():
        n = results.get("n-samples", {}).get(task, {}).get("effective", values.get("sample_len"))
        out_tasks[task] = {**_metrics(values), "n": n, "harness": f"lm-eval {lm_eval.__version__}",
                           "model": registry_name, "model_args": model_args, "seconds": round(seconds, 1)}
        if model["architecture"] == "encoder":
            out_tasks[task]["scoring"] = scoring
        if out is not None and task in results.get("samples", {}):
            _write_samples(out / "lm_eval" / model["name"].replace("/", "__"), task, results["samples"][task])
    return {"lm_eval": out_tasks}


def _quietly(fn):
    """Run `fn` with the harness's and datasets' own progress bars and info logs off (the one
    progress line per run is ours), and without the stray "fatal: not a git repository" line
    (see `_git_hash`). Everything else the harness writes to stderr still reaches the user."""
    import logging
    from contextlib import ExitStack
    from unittest import mock

    import datasets
    from tqdm import tqdm

    def silent(*args, **kwargs):
        return tqdm(*args, **{**kwargs, "disable": True})

    datasets.disable_progress_bars()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    with ExitStack() as stack:
        for module in ("lm_eval.api.model", "lm_eval.api.task", "lm_eval.models.huggingface"):
            stack.enter_context(mock.patch(f"{module}.tqdm", silent))
        stack.enter_context(mock.patch("lm_eval.evaluator.get_git_commit_hash", _git_hash))
        return fn()


def _git_hash():
    """The harness's get_git_commit_hash (lm_eval/loggers/utils.py) with git's stderr captured.
    `simple_evaluate` records the commit of the current folder by running `git describe`, whose
    stderr is the terminal's: outside a repository it prints "fatal: not a git repository" though
    nothing failed. Same answer as the harness's: git's, else the .git folder's, else None."""
    import os
    import subprocess

    from lm_eval.loggers.utils import get_commit_from_path

    try:
        done = subprocess.run(["git", "describe", "--always"], capture_output=True, check=True)  # noqa: S607
        return done.stdout.strip().decode()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return get_commit_from_path(os.getcwd())


def load_mteb_tasks(specs: list[str]) -> dict:
    """{name: mteb task} for BEIR-layout folders and mteb task names, data loaded (see mteb_local)."""
    need("mteb", "--mteb")

    if not [s for s in specs if s.strip()]:
        raise UserError("--mteb needs BEIR-layout folders or mteb retrieval task names, e.g. --mteb SciFact")
    return load_tasks(specs)


def run_mteb(model: dict, tasks: dict, cfg, log=print) -> dict:
    """{"mteb": {task: metrics}}. A sentence-transformers model is scored as it is; any other model
    is first fine-tuned into one on its world's retrieval data (the retrieval task's best learning
    rate when it ran, seed 0, the same budget)."""
    from dataclasses import replace

    line = ProgressLine(f"  [{model['name']}] mteb " + ", ".join(tasks))
    if (Path(model["path"]) / "modules.json").is_file():
        from sentence_transformers import SentenceTransformer

        embedder, how = SentenceTransformer(model["path"]), "as it is"
    else:
        ref = ModelRef(model["name"], model["architecture"], model["path"], model.get("run"))
        base = build_tasks(replace(cfg, tasks=["retrieval"]), world_for(ref))["retrieval"]
        lr = model["tasks"].get("retrieval", {}).get("best_lr", cfg.lrs[0])
        embedder = base.finetune(ref.path, ref.architecture, 0, lr, cfg.steps, cfg.batch_size)
        how = f"fine-tuned on the world's retrieval pairs (lr {lr:g}, {cfg.steps} steps, seed 0)"
    scores = mteb_local.evaluate(embedder, tasks)
    seconds = line.close()
    return {"mteb": {name: {**s, "model": how, "seconds": round(seconds, 1)} for name, s in scores.items()}}
