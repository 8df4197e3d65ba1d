"""Honest throughput: tokens/s and MFU per logged step, in one line and in `metrics.jsonl`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

# Dense bf16 peak TFLOP/s of common accelerators (vendor datasheets, without sparsity).
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0, "4090": 165.0}

_measured_peak: float | None = None


def measure_peak_tflops(dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 5) -> float:
    """The practical matmul peak of this machine (used when no peak is given or known)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    a @ b  # warm up the kernels
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


def default_peak_tflops(precision: str = "fp32") -> float:
    """Datasheet peak for a known GPU, else the measured matmul peak (once per process)."""
    global _measured_peak
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, value in GPU_PEAK_TFLOPS.items():
            if key in name:
                return value if precision == "bf16" else value / 2
    if _measured_peak is None:
        _measured_peak = measure_peak_tflops()
    return _measured_peak


class StepLogger(TrainerCallback):
    """Adds tokens/s and MFU to every log, prints one line and appends it to `metrics.jsonl`.

    Inserted first among the callbacks so that trackers (`report_to`) receive the same numbers.
    """

    def __init__(self, path: Path, twin: str, phase: str, schedule, flops_per_token: float,
                 peak_tflops: float, world_size: int, step_offset: int = 0, token_offset: int = 0):
        self.path, self.twin, self.phase = path, twin, phase
        # `schedule`: a BatchSchedule (sequences per step), or a constant number of tokens per step.
        self.schedule, self.flops_per_token = schedule, flops_per_token
        self.peak = peak_tflops * 1e12 * world_size
        self.step_offset, self.token_offset = step_offset, token_offset
        self._last_time: float | None = None
        self._last_step = 0

    def tokens_through(self, steps: int) -> int:
        if isinstance(self.schedule, int):
            return steps * self.schedule
        return self.schedule.tokens_through(steps)

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_time, self._last_step = time.perf_counter(), state.global_step
        self._begin_time, self._begin_step = self._last_time, state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs:
            return
        now = time.perf_counter()
        elapsed = max(now - (self._last_time or now), 1e-9)
        tps = (self.tokens_through(state.global_step) - self.tokens_through(self._last_step)) / elapsed
        self._last_time, self._last_step = now, state.global_step
        logs["tokens_per_second"] = round(tps, 1)
        logs["mfu"] = round(tps * self.flops_per_token / self.peak, 5)
        if not state.is_world_process_zero:
            return
        step_tokens = self.tokens_through(state.global_step) - self.tokens_through(state.global_step - 1)
        seq_len = getattr(self.schedule, "seq_len", None)
        record = {
            "twin": self.twin, "phase": self.phase, "step": state.global_step,
            "global_step": self.step_offset + state.global_step,
            # tokens: seen by this twin so far, over all phases; batch / step_tokens: this step's.
            "tokens": self.token_offset + self.tokens_through(state.global_step),
            "batch": step_tokens // seq_len if seq_len else None, "step_tokens": step_tokens,
            # the step's samples are [first_sample, first_sample + batch) of the phase's order
            "first_sample": self.schedule.first_sample(state.global_step - 1) if seq_len else None,
            "loss": logs["loss"], "lr": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm"),
            "tokens_per_second": logs["tokens_per_second"], "mfu": logs["mfu"],
        }
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        grad = record["grad_norm"]
        done = state.global_step - self._begin_step
        eta = (state.max_steps - state.global_step) * (now - self._begin_time) / max(done, 1)
        print(
            f"{self.twin:7s} {self.phase:10s} step {state.global_step:6d}/{state.max_steps} "
            f"loss {record['loss']:.4f} lr {record['lr']:.2e} grad {grad if grad is None else f'{grad:.3f}'} "
            f"batch {record['batch']} tok/s {tps:,.0f} mfu {100 * record['mfu']:.2f}% eta {_clock(eta)}",
            flush=True,
        )


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def drop_records_after(path: Path, twin: str, phase: str, step: int) -> None:
    """On resume, forget log lines past the checkpoint so the curve has no duplicate steps."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec["twin"] == twin and rec["phase"] == phase and rec["step"] > step:
            continue
        kept.append(line)
    path.write_text("".join(k + "\n" for k in kept))
