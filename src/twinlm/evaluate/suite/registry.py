"""Which module runs each part of the suite, and what `--suite SPEC` names.

SPEC is `ettin` (every part, as the paper evaluates), a comma list of parts (`glue,generative`)
or of single tasks as `part:task` (`glue:sst2,generative:piqa`), mixed freely. Parts are looked
up in PART_MODULES and imported only when named, so a part whose module is not installed yet is
a one-line error naming it, not an import failure at start-up.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from twinlm.errors import UserError
from twinlm.evaluate.suite.base import PARTS

PART_MODULES = {
    "glue": "twinlm.evaluate.suite.glue",
    "retrieval": "twinlm.evaluate.suite.retrieval",
    "generative": "twinlm.evaluate.suite.generative",
    "winogender": "twinlm.evaluate.suite.winogender",
    # text(/text_pair)/label datasets of the user's own (--classification-data)
    "classification": "twinlm.evaluate.suite.custom",
}
PRESETS = {"ettin": PARTS}


def load_part(name: str) -> ModuleType:
    if name not in PART_MODULES:
        raise UserError(f"unknown suite part {name!r}; parts: {', '.join(PART_MODULES)} (or the preset ettin)")
    try:
        return importlib.import_module(PART_MODULES[name])
    except ModuleNotFoundError as err:
        if err.name != PART_MODULES[name]:
            raise
        raise UserError(f"suite part {name!r} is not available in this installation (no module {PART_MODULES[name]}); "
                        f"leave it out of --suite") from None


def parse_spec(spec: str, settings=None) -> dict[str, list[str]]:
    """{part: [tasks]} in the order named; a part named whole gets every task of its TASKS."""
    wanted: dict[str, list[str]] = {}
    items = [s.strip() for s in (spec or "").split(",") if s.strip()]
    if not items:
        raise UserError("--suite needs a value: ettin, a comma list of parts "
                        f"({', '.join(PARTS)}) or part:task items such as glue:sst2")
    for item in items:
        if item in PRESETS:
            for part in PRESETS[item]:
                wanted.setdefault(part, [])
                wanted[part] += [t for t in tasks_of(load_part(part), settings) if t not in wanted[part]]
            continue
        part, _, task = item.partition(":")
        module = load_part(part)
        known = tasks_of(module, settings)
        if task and task not in known:
            raise UserError(f"unknown task {task!r} of suite part {part}; its tasks: {', '.join(known) or '(none)'}")
        chosen = [task] if task else known
        if not chosen:
            raise UserError(f"suite part {part} has no tasks here" + (" (give --classification-data FILE_OR_HUB_ID)"
                                                                      if part == "classification" else ""))
        wanted.setdefault(part, [])
        wanted[part] += [t for t in chosen if t not in wanted[part]]
    # A part's own order (GLUE: MNLI before the tasks that start from its checkpoint).
    return {part: [t for t in tasks_of(load_part(part), settings) if t in tasks] for part, tasks in wanted.items()}


def tasks_of(module: ModuleType, settings=None) -> list[str]:
    """A part's task names: its TASKS, or `tasks(settings)` for a part whose tasks come from the
    user's flags (--classification-data)."""
    if hasattr(module, "tasks"):
        return list(module.tasks(settings))
    return list(module.TASKS)
