"""Everything decided before any work: the models, the parts' runs, the data each task reads and
where it is found (a missing split is a one-line error, or with --skip-missing a line in the
report), and --dry-run's listing with its cost estimate."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from twinlm.evaluate.models import resolve
from twinlm.evaluate.suite.base import DataNeed, SuiteRun, SuiteSettings
from twinlm.evaluate.suite.mirror import MissingData, looked_in
from twinlm.evaluate.suite.registry import load_part, parse_spec


@dataclass
class SuitePlan:
    models: list  # evaluate.models.ModelRef
    spec: dict[str, list[str]]  # {part: [tasks]} that will run
    runs: list[tuple[SuiteRun, object]] = field(default_factory=list)  # (run, ModelRef), in order
    needs: dict[tuple[str, str], list[DataNeed]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # one line per task left out for missing data
    missing: list[str] = field(default_factory=list)  # twins a run folder lacks

    def module(self, part: str):
        return load_part(part)


def hub_offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def missing_line(part: str, task: str, need: DataNeed, settings: SuiteSettings) -> str:
    name = need.hub_id + (f" ({need.config})" if need.config else "")
    where = looked_in(need, settings.data_dir) if settings.data_dir else "no --data-dir given and the hub is offline"
    return f"{part}:{task} needs {name} split '{need.split}': not found (looked in {where})"


def make_plan(inputs: list[str], spec: str, settings: SuiteSettings) -> SuitePlan:
    models, lacking = [], []
    for spec_in in inputs:
        refs, gone = resolve(spec_in)
        models += refs
        lacking += gone
    if settings.classification_data and "classification" not in [s.strip().split(":")[0] for s in spec.split(",")]:
        spec += ",classification"  # --classification-data names its tasks itself
    wanted = parse_spec(spec, settings)
    plan = SuitePlan(models, {}, missing=lacking)
    absent = []
    for part, tasks in wanted.items():
        module = load_part(part)
        for task in tasks:
            try:
                needs = module.needs(task, settings)
            except MissingData as err:  # a part may raise instead of returning a need without files
                absent.append(f"{part}:{task}: {str(err).split('; ')[0]}")
                continue
            plan.needs[(part, task)] = needs
            gone = [n for n in needs if not n.local and (settings.data_dir is not None or hub_offline())]
            if gone:
                absent += [missing_line(part, task, n, settings) for n in gone[:1]]
                continue
            plan.spec.setdefault(part, []).append(task)
    if absent and not settings.skip_missing:
        more = f" (and {len(absent) - 1} more task(s) with missing data)" if len(absent) > 1 else ""
        raise MissingData(f"{absent[0]}{more}; download it there, leave the task out of --suite, or pass --skip-missing")
    plan.skipped = absent
    if not plan.spec:
        raise MissingData(f"no task of --suite {spec} has its data: {absent[0]}" + (f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""))
    settings.spec = plan.spec
    for ref in models:
        for part, tasks in plan.spec.items():
            module = load_part(part)
            for task in tasks:
                plan.runs += [(run, ref) for run in module.plan(task, ref, settings)]
    return plan


UNIT_NAMES = {"glue": "training steps, evaluations included", "classification": "optimiser steps"}


def units_of(run: SuiteRun, settings: SuiteSettings) -> int:
    module = load_part(run.part)
    return int(module.units(run, settings)) if hasattr(module, "units") else 1


def parameters(path: str) -> int | None:
    """Parameter count from a local model's safetensors header (no weights read); None otherwise."""
    files = sorted(Path(path).glob("*.safetensors")) if Path(path).is_dir() else []
    total = 0
    for f in files:
        with f.open("rb") as fh:
            size = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(size))
        for name, info in header.items():
            if name != "__metadata__":
                n = 1
                for d in info["shape"]:
                    n *= d
                total += n
    return total or None


def describe(plan: SuitePlan, settings: SuiteSettings) -> list[str]:
    """--dry-run's listing: every run, the data, and the cost."""
    lines = [f"{len(plan.runs)} run(s) for {len(plan.models)} model(s): "
             + ", ".join(f"{m.name} ({m.architecture})" for m in plan.models)]
    for run, _ in plan.runs:
        extra = " ".join(f"{k}={v}" for k, v in run.extra if v)
        lines.append(f"  {run.model}  {run.part}:{run.task}  lr={run.lr if run.lr is not None else '-'} "
                     f"seed={run.seed if run.seed is not None else '-'} epochs={run.epochs if run.epochs is not None else '-'}"
                     + (f"  {extra}" if extra else "") + f"  units={units_of(run, settings)}")
    lines.append("data:")
    for (part, task), needs in plan.needs.items():
        for n in needs:
            name = n.hub_id + (f" ({n.config})" if n.config else "")
            where = (f"{n.local[0].parent} ({len(n.local)} file(s), {n.rows if n.rows is not None else '?'} rows)"
                     if n.local else "MISSING" if settings.data_dir is not None or hub_offline() else "the hub")
            lines.append(f"  {part}:{task}  {name} {n.split}: {where}")
    lines += [f"  skipped: {s}" for s in plan.skipped]
    lines += cost_lines(plan, settings)
    return lines


def cost_lines(plan: SuitePlan, settings: SuiteSettings) -> list[str]:
    """Work per part in its units, and for fine-tuning the training FLOPs (6 x parameters x
    tokens, every sequence counted at the maximum length: an upper bound)."""
    per_part: dict[str, int] = {}
    flops = 0.0
    for run, ref in plan.runs:
        units = units_of(run, settings)
        per_part[run.part] = per_part.get(run.part, 0) + units
        extra = dict(run.extra)
        params = parameters(ref.path)
        if params and extra.get("batch_size") and extra.get("max_length"):
            flops += 6 * params * units * int(extra["batch_size"]) * int(extra["max_length"])
    out = ["cost: " + "; ".join(f"{p}: {u} units ({UNIT_NAMES.get(p, 'as the part counts')})"
                                for p, u in per_part.items())]
    if flops:
        # One H100 at 40% of its dense bf16 peak (~400 TFLOP/s effective) as a yardstick.
        out.append(f"cost: fine-tuning <= {flops:.2e} FLOPs (6 x params x tokens at max length), "
                   f"about {flops / 4e14 / 3600:.2f} GPU-hours at 400 TFLOP/s")
    return out
