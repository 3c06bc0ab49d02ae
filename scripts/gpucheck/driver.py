"""The check's driver: every step in a child process under its own time cap, the report
rewritten after every step (and whenever a running step records a check).

Only the standard library here: the driver must run before the carried wheels are
installed, and whatever a step does (a CUDA error, a hang) stays in that step.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpucheck.record import atomic_write
from gpucheck.report import render

ROOT = Path(__file__).resolve().parents[2]
STEPS = ("setup", "quant", "steptime", "training", "ddp")
# Per profile: each step's cap (s) and sizes. gpu: the lent H200, caps summing to 540 s
# of the 600 s one command may run; cpu: the dry run; quick: the CI test's dry run.
# The accuracy floor is the GPU's: W2A2 from scratch at the gpu profile's size reached
# 38.2 % top-1 on the CPU (seed 0, eager fp32); the dry runs train too little for one.
PROFILES: dict[str, dict] = {
    "gpu": {
        "caps": {"setup": 45, "quant": 60, "steptime": 150, "training": 195, "ddp": 90},
        "steptime": {"batch": 250, "warmup": 3, "reps": 10, "per_rep": 5, "compiled": True},
        "training": {"per_class": 1000, "epochs": 10, "batch": 250, "workers": 2, "lr": 0.1,
                     "seeds": {"eager": 3, "compiled": 2, "compiled-bf16": 2}, "parallel": 9,
                     "floor": 30.0, "compile_threads": 4},
        "ddp": {"batch": 64, "steps": 6},
    },
    "cpu": {
        "caps": {"setup": 180, "quant": 300, "steptime": 2400, "training": 4800, "ddp": 600},
        "steptime": {"batch": 32, "warmup": 1, "reps": 3, "per_rep": 2, "compiled": True},
        "training": {"per_class": 40, "epochs": 2, "batch": 40, "workers": 1, "lr": 0.1,
                     "seeds": {"eager": 2, "compiled": 2, "compiled-bf16": 1}, "parallel": 1,
                     "floor": 0.0, "compile_threads": 2},
        "ddp": {"batch": 8, "steps": 3},
    },
    "quick": {
        "caps": {"setup": 180, "quant": 300, "steptime": 300, "training": 900, "ddp": 300},
        "steptime": {"batch": 8, "warmup": 1, "reps": 2, "per_rep": 1, "compiled": False},
        "training": {"per_class": 16, "epochs": 2, "batch": 32, "workers": 0, "lr": 0.1,
                     "seeds": {"eager": 2, "compiled": 0, "compiled-bf16": 0}, "parallel": 1,
                     "floor": 0.0, "compile_threads": 1},
        "ddp": {"batch": 4, "steps": 2},
    },
}  # fmt: skip
BUDGET_S = {"gpu": 560, "cpu": 10**5, "quick": 3600}  # no step starts past this total


def run(device: str, profile: str, out: Path, carry: Path, site: Path) -> int:
    """Run the steps; returns 0 if every check passed."""
    work = Path(tempfile.mkdtemp(prefix="gpu-check."))
    settings = {
        "device": device,
        "profile": profile,
        "sizes": PROFILES[profile],
        "carry": str(carry.resolve()),
        "site": str(site.resolve()),
        "root": str(ROOT),
        "work": str(work),
    }
    (work / "settings.json").write_text(json.dumps(settings, indent=1))
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(site.resolve()), str(ROOT), str(ROOT / "scripts")]),
    }
    out.mkdir(parents=True, exist_ok=True)
    state = {
        "device": device,
        "profile": profile,
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "steps": {},
        "t0": time.time(),
    }
    for step in STEPS:
        _run_step(step, state, work, env, out)
    state["total_s"] = round(time.time() - state["t0"], 1)
    _write(state, work, out)
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(v["status"] == "PASS" for v in state["steps"].values()) else 1


def _run_step(step: str, state: dict, work: Path, env: dict, out: Path) -> None:
    cap = PROFILES[state["profile"]]["caps"][step]
    used = time.time() - state["t0"]
    if used + cap > BUDGET_S[state["profile"]]:
        state["steps"][step] = {"status": "SKIPPED", "s": 0, "cap": cap, "note": "no time left"}
        _write(state, work, out)
        return
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "gpu_check.py"),
        "step",
        step,
        "--settings",
        str(work / "settings.json"),
        "--record",
        str(work / f"{step}.json"),
    ]
    t0, log = time.time(), work / f"{step}.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
        )
        state["steps"][step] = {"status": "RUNNING", "cap": cap}
        seen = 0.0
        while proc.poll() is None and time.time() - t0 < cap:
            time.sleep(1.0)
            stamp = _mtime(work / f"{step}.json")
            if stamp > seen:  # a check was recorded: the report shows it now
                seen = stamp
                _write(state, work, out)
        timed_out = proc.poll() is None
        if timed_out:  # TERM first: a step stops the processes it started elsewhere
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    rc = proc.returncode
    state["steps"][step] = {
        "status": "",
        "s": round(time.time() - t0, 1),
        "cap": cap,
        "rc": rc,
        "note": f"timed out after {cap} s" if timed_out else "",
    }
    _write(state, work, out)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _records(work: Path) -> dict[str, dict]:
    out = {}
    for step in STEPS:
        try:
            out[step] = json.loads((work / f"{step}.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            continue
    return out


def _write(state: dict, work: Path, out: Path) -> None:
    """gpu-check.json, gpu-check.md and gpu-check.log under `out`, rewritten whole."""
    records = _records(work)
    for step, st in state["steps"].items():
        if st["status"] in ("", "RUNNING") and "rc" in st:
            checks = records.get(step, {}).get("checks", [])
            failed = st["rc"] != 0 or any(c["status"] == "FAIL" for c in checks)
            st["status"] = "FAIL" if failed or st["note"] else "PASS"
    doc = {**{k: v for k, v in state.items() if k != "t0"}, "records": records}
    doc["elapsed_s"] = round(time.time() - state["t0"], 1)
    atomic_write(out / "gpu-check.json", json.dumps(doc, indent=1) + "\n")
    atomic_write(out / "gpu-check.md", render(doc))
    logs = [
        f"===== {s} =====\n{_tail(work / f'{s}.log')}"
        for s in STEPS
        if (work / f"{s}.log").exists()
    ]
    atomic_write(out / "gpu-check.log", "\n".join(logs))


def _tail(path: Path, limit: int = 2_000_000) -> str:
    """The last `limit` bytes of a log: the whole returns under 16 MiB."""
    data = path.read_bytes()
    return data[-limit:].decode(errors="replace")
