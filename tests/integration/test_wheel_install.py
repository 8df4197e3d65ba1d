"""twinlm as a user installs it: a wheel built from the sources, installed without `-e` into a
folder of its own, must find its shipped recipes (pretraining, fine-tuning, conversion) and run
`twinlm plan` and `twinlm finetune --help` with no checkout importable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Runs in the installed copy: drops every other folder that holds a `twinlm` package from
# sys.path (the checkout's src/, an editable install's path), so only SITE can be imported.
BOOTSTRAP = """
import sys
from pathlib import Path

site = sys.argv[1]
sys.path[:] = [p for p in sys.path if p == site or not (Path(p or ".") / "twinlm").is_dir()]
import twinlm

assert Path(twinlm.__file__).resolve().is_relative_to(Path(site).resolve()), twinlm.__file__
print("twinlm from", twinlm.__file__, flush=True)
from twinlm.cli import main

for argv in (["plan", "ettin-1b"], ["plan", "nano"], ["finetune", "dense", "--help"]):
    print("$ twinlm", " ".join(argv), flush=True)
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    if code:
        sys.exit(f"twinlm {' '.join(argv)} exited with {code}")
"""


def run(cmd: list[str], cwd: Path, env: dict | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_wheel_install_runs_from_its_own_folder(tmp_path):
    # Build from a copy, so the checkout gets no build/ or egg-info folders.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
         str(source)], cwd=tmp_path)
    wheels = list((tmp_path / "dist").glob("twinlm-*.whl"))
    assert len(wheels) == 1, wheels
    site = tmp_path / "site"
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target", str(site),
         str(wheels[0])], cwd=tmp_path)

    shipped = sorted(p.relative_to(ROOT / "src").as_posix() for p in (ROOT / "src/twinlm/recipes").rglob("*.yaml"))
    installed = sorted(p.relative_to(site).as_posix() for p in (site / "twinlm/recipes").rglob("*.yaml"))
    assert installed == shipped and any("/finetune/" in p for p in shipped) and any("/convert/" in p for p in shipped)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), HF_HUB_OFFLINE="1")
    out = run([sys.executable, "-c", BOOTSTRAP, str(site)], cwd=tmp_path, env=env)
    assert "recipe ettin-1b: size 1b, 3 phases" in out, out
    assert "recipe nano:" in out and "built-in world" in out, out
    assert "usage: twinlm finetune" in out and "--recipe" in out, out
    assert "no recipe file" not in out
