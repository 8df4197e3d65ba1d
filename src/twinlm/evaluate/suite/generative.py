"""The generative part of the suite: the Ettin paper's ten zero-shot tasks (its Table 4), run by
lm-evaluation-harness with the harness's own task definitions.

Each task is the harness's registered YAML, included unchanged by a two-line task file that
points only its data at a place: the hub dataset (as the harness names it) or, with a mirror
(`--data-dir`), the mirror's files in the hub dataset's own columns, so the harness's own
`doc_to_text`, `process_docs`, choices and metrics build every request. Decoders run under the
harness's `HFLM` with `add_bos_token=True` (as Ettin ran them); encoders under twinlm's
`twinlm-encoder` model (Ettin's masked left-to-right protocol, or classic PLL).

The metric per task, as far as the paper can be checked: the harness's length-normalised accuracy where
the task defines one (ARC, HellaSwag, OpenBookQA, PIQA, SciQ), plain accuracy otherwise, and exact
match for TriviaQA. Ettin's release names none (its tables are images; its lm-eval fork and docs
only run the harness), so it was checked on the paper's Pythia-410m row against the harness's own
numbers for that model, which match acc_norm on ARC-C (24.3 vs acc 21.3; paper 24.7) and SciQ
(72.1 vs acc 81.1; paper 72.3), acc on LAMBADA (51.6; 51.5) and Winogrande (53.7; 53.6); PIQA's
two metrics (66.8, 67.1; paper 67.0) do not tell, and HellaSwag, OpenBookQA, SIQA, TriviaQA and
WSC273 are not in that file (their metrics stay the harness's convention, unconfirmed).
Source: EleutherAI/pythia, evals/pythia-v1/pythia-410m/zero-shot/410m_step143000.json.

Settings read (any object with these attributes; missing ones take the default):
`data_dir` (None: the hub), `lm_eval_limit` (items per task, None: all), `encoder_scoring`
("ettin" | "pll"), `lm_eval_batch_size` (8), `out` (per-item samples go to `out/lm_eval/`)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from twinlm.errors import UserError
from twinlm.evaluate.benchmarks import LmEvalPlan, run_lm_eval
from twinlm.evaluate.suite.base import DataNeed, SuiteRun
from twinlm.evaluate.suite.mirror import BUILDERS, split_files

PART = "generative"


@dataclass(frozen=True)
class HarnessTask:
    """One of the ten: the harness's task name, the folder of lm_eval/tasks holding its YAML, the
    hub dataset its YAML reads (id, config, the split it scores) and the metric the paper reports."""

    harness: str
    folder: str
    hub_id: str
    config: str | None
    split: str
    metric: str


TASKS: dict[str, HarnessTask] = {
    "arc_challenge": HarnessTask("arc_challenge", "arc", "allenai/ai2_arc", "ARC-Challenge", "test", "acc_norm"),
    "hellaswag": HarnessTask("hellaswag", "hellaswag", "Rowan/hellaswag", None, "validation", "acc_norm"),
    "lambada": HarnessTask("lambada_openai", "lambada", "EleutherAI/lambada_openai", None, "test", "acc"),
    "openbookqa": HarnessTask("openbookqa", "openbookqa", "allenai/openbookqa", "main", "test", "acc_norm"),
    "piqa": HarnessTask("piqa", "piqa", "baber/piqa", None, "validation", "acc_norm"),
    "sciq": HarnessTask("sciq", "sciq", "allenai/sciq", None, "test", "acc_norm"),
    "siqa": HarnessTask("social_iqa", "siqa", "lighteval/siqa", None, "validation", "acc"),
    "triviaqa": HarnessTask("triviaqa", "triviaqa", "mandarjoshi/trivia_qa", "rc.nocontext", "validation", "exact_match"),
    "winogrande": HarnessTask("winogrande", "winogrande", "allenai/winogrande", "winogrande_xl", "validation", "acc"),
    "wsc": HarnessTask("wsc273", "wsc273", "lighteval/winograd_wsc", "wsc273", "test", "acc"),
}

# Ettin ran both twins with `add_bos_token=True` (JHU-CLSP/ettin-encoder-vs-decoder:
# docs/decoder-eval.md for decoders, docs/encoder-generative-eval.md for encoders).
ADD_BOS_TOKEN = True


def _task(task: str) -> HarnessTask:
    if task not in TASKS:
        raise UserError(f"generative:{task} is not one of the ten tasks: {', '.join(TASKS)}")
    return TASKS[task]


def _field(model, name: str, default=None):
    """A model given as a ModelRef (attributes) or as a dict (keys)."""
    return model.get(name, default) if isinstance(model, dict) else getattr(model, name, default)


def plan(task: str, model, settings) -> list[SuiteRun]:
    """One zero-shot run; an encoder's run names its scoring (a different scoring is a different result)."""
    _task(task)
    twin = _field(model, "architecture")
    extra = (("scoring", getattr(settings, "encoder_scoring", "ettin")),) if twin == "encoder" else ()
    limit = getattr(settings, "lm_eval_limit", None)
    if limit is not None:
        extra += (("limit", str(limit)),)
    return [SuiteRun(PART, task, _field(model, "name"), twin, extra=extra)]


def needs(task: str, settings) -> list[DataNeed]:
    spec = _task(task)
    data_dir = getattr(settings, "data_dir", None)
    return [DataNeed(spec.hub_id, spec.config, spec.split, split_files(spec.hub_id, spec.config, spec.split, data_dir))]


def harness_yaml(task: str) -> Path:
    """The harness's own YAML for a task, found by its registry (indexing only that task's folder)."""
    import lm_eval.tasks
    from lm_eval.tasks import TaskManager

    spec = _task(task)
    folder = Path(lm_eval.tasks.__file__).parent / spec.folder
    entry = TaskManager(include_path=str(folder), include_defaults=False).task_index.get(spec.harness)
    if entry is None or entry.yaml_path is None:
        raise UserError(f"lm-evaluation-harness {_version()} has no task {spec.harness} in {folder}")
    return Path(entry.yaml_path)


def _version() -> str:
    import lm_eval

    return lm_eval.__version__


def data_override(task: str, data_dir: Path | None) -> dict:
    """The only keys the task file changes: where the data are. Without a mirror, none (the
    harness's own hub dataset). With one: the mirror's files for the scored split, read by the
    `datasets` builder of their type; the task's other splits are dropped unless mirrored too
    (a zero-shot run never reads them)."""
    spec = _task(task)
    if data_dir is None:
        return {}
    files = {spec.split: [str(p.resolve()) for p in split_files(spec.hub_id, spec.config, spec.split, data_dir)]}
    override: dict = {"dataset_path": BUILDERS[Path(files[spec.split][0]).suffix], "dataset_name": None}
    for key, split in (("training_split", "train"), ("validation_split", "validation"), ("test_split", "test")):
        if split == spec.split:
            continue
        try:
            files[split] = [str(p.resolve()) for p in split_files(spec.hub_id, spec.config, split, data_dir)]
        except UserError:
            override[key] = None
    override["dataset_kwargs"] = {"data_files": files}
    return override


def write_task_file(task: str, folder: Path, data_dir: Path | None) -> Path:
    """A task YAML that includes the harness's own definition and overrides only the data."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    body = {"include": str(harness_yaml(task)), "task": _task(task).harness, **data_override(task, data_dir)}
    path = folder / f"{_task(task).harness}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def load_harness_task(task: str, data_dir: Path | None, folder: Path):
    """(TaskManager, the harness's task object) for `task` on the mirror's (or the hub's) data."""
    from lm_eval.tasks import TaskManager

    write_task_file(task, folder, data_dir)
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    name = _task(task).harness
    try:
        loaded = manager.load_task_or_group([name])
    except Exception as err:  # unreadable files, or hub data without a network
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"generative:{task}: cannot load {_task(task).hub_id} for the harness: {first}") from None
    return manager, loaded[name]


def execute(run: SuiteRun, model, settings) -> dict:
    """{"score": the paper's metric x 100, "metric", every metric the harness reported, "n", ...}."""
    spec = _task(run.task)
    data_dir = getattr(settings, "data_dir", None)
    extra = dict(run.extra)
    limit = int(extra["limit"]) if "limit" in extra else None
    as_dict = {"name": _field(model, "name"), "architecture": _field(model, "architecture"), "path": str(_field(model, "path")),
               "prediction_offset": _field(model, "prediction_offset", 0) or 0}
    out = getattr(settings, "out", None)
    with tempfile.TemporaryDirectory() as tmp:
        manager, _ = load_harness_task(run.task, Path(data_dir) if data_dir else None, Path(tmp))
        plan_ = LmEvalPlan([spec.harness], [tmp], manager)
        result = run_lm_eval(as_dict, plan_, scoring=extra.get("scoring", "ettin"),
                             batch_size=int(getattr(settings, "lm_eval_batch_size", 8)), limit=limit,
                             out=Path(out) if out else None, add_bos_token=ADD_BOS_TOKEN)["lm_eval"][spec.harness]
    # A filtered metric keeps its filter's name (TriviaQA's "exact_match,remove_whitespace").
    value = next((v for k, v in result.items() if k == spec.metric or k.startswith(spec.metric + ",")), None)
    if value is None:
        raise UserError(f"generative:{run.task}: the harness reported no {spec.metric} (it gave {', '.join(result)})")
    # The harness's standard error of that metric, on the same 0-100 scale: a finding judged on
    # one task (report.py, when the ten-task average is incomplete) weighs the gap against it.
    stderr = next((v for k, v in result.items() if k == f"{spec.metric}_stderr"
                   or k.startswith(f"{spec.metric}_stderr,")), None)
    if isinstance(stderr, (int, float)):
        result["score_stderr"] = 100.0 * stderr
    return {**result, "score": 100.0 * value, "metric": spec.metric, "harness_task": spec.harness,
            "dataset": spec.hub_id + (f" ({spec.config})" if spec.config else ""), "split": spec.split,
            "add_bos_token": ADD_BOS_TOKEN}


def average(records: dict[str, dict]) -> float | None:
    """The paper's "Avg": the mean score of the ten tasks; None until all ten have a score."""
    scores = [records[t]["score"] for t in TASKS if t in records and records[t].get("score") is not None]
    return sum(scores) / len(scores) if len(scores) == len(TASKS) else None
