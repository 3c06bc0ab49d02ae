"""gpu-check.md: the verdict, the machine, a table of steps, then each step's checks with
their numbers. Rendered from the driver's state and the steps' records (plain dicts)."""

from __future__ import annotations

import json
from typing import Any


def render(doc: dict[str, Any]) -> str:
    records = doc.get("records", {})
    machine = records.get("setup", {}).get("info", {}).get("machine", {})
    card = machine.get("gpu") or ("no GPU" if doc["device"] == "cpu" else "no CUDA device")
    steps = doc["steps"]
    done = [s for s in steps.values() if s["status"] in ("PASS", "FAIL", "SKIPPED")]
    verdict = (
        "RUNNING"
        if len(done) < len(steps) or "total_s" not in doc
        else ("PASS" if all(s["status"] == "PASS" for s in steps.values()) else "FAIL")
    )
    title = (
        f"lowbit device check: {card}"
        if doc["device"] == "cuda"
        else ("lowbit device check: CPU DRY RUN (not a GPU result)")
    )
    lines = [
        f"# {title}",
        "",
        f"**{verdict}** after {doc.get('elapsed_s', 0):.0f} s "
        f"(profile `{doc['profile']}`, started {doc['started']}).",
        "",
        f"Command: `{doc['command']}`",
        "",
        f"Machine: {_numbers(machine)}",
        "",
        "| step | status | seconds (cap) | checks passed / failed / measured |",
        "|---|---|---|---|",
    ]
    for name, st in steps.items():
        counts = _counts(records.get(name, {}))
        note = f" — {st['note']}" if st.get("note") else ""
        lines.append(
            f"| {name} | {st['status']}{note} | {st.get('s', '…')} ({st['cap']}) | {counts} |"
        )
    for name in steps:
        lines += _section(name, records.get(name))
    return "\n".join(lines) + "\n"


def _counts(record: dict) -> str:
    checks = record.get("checks", [])
    return " / ".join(str(sum(c["status"] == s for c in checks)) for s in ("PASS", "FAIL", "INFO"))


def _section(name: str, record: dict | None) -> list[str]:
    if not record:
        return ["", f"## {name}", "", "No record (the step did not start, or died at once)."]
    out = ["", f"## {name}", ""]
    info = {k: v for k, v in record.get("info", {}).items() if k != "machine"}
    if info:
        out += [f"Info: {_numbers(info)}", ""]
    out += ["| check | result | numbers |", "|---|---|---|"]
    for c in record.get("checks", []):
        note = f" {c['note']}" if c.get("note") else ""
        out.append(f"| {c['name']} | **{c['status']}**{note} | {_numbers(c['numbers'])} |")
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + _numbers(v) + "}"
    return json.dumps(v) if not isinstance(v, str) else v


def _numbers(d: dict) -> str:
    return ", ".join(f"{k} {_fmt(v)}" for k, v in d.items()).replace("|", "\\|") or "–"
