"""Running a planned suite: every finished run written as it ends (OUT/runs/<key>.json), so
`--resume` on the same --out skips what is done and re-runs only what is missing or was cut off
(a run killed mid-way left no file); one progress line per run with the ETA of the whole suite."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from twinlm.errors import UserError
from twinlm.evaluate.runner import format_seconds
from twinlm.evaluate.suite.base import SuiteSettings
from twinlm.evaluate.suite.planner import SuitePlan, units_of
from twinlm.evaluate.suite.registry import load_part
from twinlm.outputs import claim, write_json

STATE = "suite.json"


def open_out(out: Path, settings: SuiteSettings, overwrite: bool, resume: bool) -> Path:
    """The output folder, checked before any work: a new one; an old one replaced (--overwrite);
    or an old suite continued (--resume), refused with one line naming the first setting that
    changed since it was started."""
    out = claim(out, overwrite, resume, resume_needs=STATE)
    state = out / STATE
    if resume:
        before = json.loads(state.read_text()).get("settings", {})
        now = settings.fingerprint()
        for key in now:
            if before.get(key) != now[key]:
                raise UserError(f"--resume: setting {key} changed ({before.get(key)!r} when {out} was started, "
                                f"{now[key]!r} now); rerun with the same value, or use another --out")
        return out
    (out / "runs").mkdir(parents=True)
    write_json(state, {"settings": settings.fingerprint()})
    return out


def read_records(out: Path) -> dict[str, dict]:
    """{run key: record} of every finished run in the folder."""
    records = {}
    for path in sorted((Path(out) / "runs").glob("*.json")):
        try:
            records[path.stem] = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue  # cannot happen with write_json's rename, but a hand-edited file is re-run
    return records


class SuiteProgress:
    """ETA of the whole suite: the runs left, each weighed by its units at the seconds per unit
    its part has taken so far (another part's rate, marked "~", before the part's first run)."""

    def __init__(self, todo: list[tuple[str, int]], log=print):
        self.left, self.log, self.total, self.count = list(todo), log, len(todo), 0
        self.rate: dict[str, tuple[float, int]] = {}

    def done(self, part: str, units: int, seconds: float, message: str) -> None:
        self.count += 1
        secs, n = self.rate.get(part, (0.0, 0))
        self.rate[part] = (secs + seconds, n + max(units, 1))
        self.left.remove((part, units))
        self.log(f"  {message}  [{seconds:.0f} s; run {self.count}/{self.total}{self.eta()}]")

    def eta(self) -> str:
        if not self.left:
            return ", done"
        total, guessed = 0.0, False
        overall = sum(s for s, _ in self.rate.values()) / max(1, sum(n for _, n in self.rate.values()))
        for part, units in self.left:
            secs, n = self.rate.get(part, (0.0, 0))
            guessed = guessed or not n
            total += max(units, 1) * (secs / n if n else overall)
        return f", ETA {'~' if guessed else ''}{format_seconds(total)}"


def execute(plan: SuitePlan, settings: SuiteSettings, out: Path, log=print) -> dict[str, dict]:
    """Runs what has no record yet; returns every record of the plan, by key."""
    records = read_records(out)
    todo = [(run, ref) for run, ref in plan.runs if run.key not in records]
    if len(todo) < len(plan.runs):
        log(f"resuming: {len(plan.runs) - len(todo)} of {len(plan.runs)} run(s) already done in {out}")
    weights = [(run.part, units_of(run, settings)) for run, _ in todo]
    progress = SuiteProgress(weights, log)
    for (run, ref), (_, units) in zip(todo, weights):
        started = time.perf_counter()
        record = load_part(run.part).execute(run, ref, settings)
        seconds = time.perf_counter() - started
        record = {"key": run.key, "run": asdict(run), "seconds": round(seconds, 1), **record}
        write_json(out / "runs" / f"{run.key}.json", record)
        records[run.key] = record
        what = ", ".join(f"{k}={v}" for k, v in (("lr", run.lr), ("seed", run.seed), ("epochs", run.epochs)) if v is not None)
        state = "" if record.get("converged") is not False else " (NOT converged)"
        progress.done(run.part, units, seconds, f"[{run.model}] {run.part}:{run.task}" + (f" {what}" if what else "")
                      + f": score {record['score']:.2f}{state}")
    return {run.key: records[run.key] for run, _ in plan.runs}
