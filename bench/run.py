"""Run every benchmark scenario side by side with its peers; write bench/RESULTS.md.

Usage: ``python bench/run.py [--rigorous] [--only SUBSTRING] [--scenario NAME ...]``

Each ``bench/bench_*.py`` is a pyperf script; this runs them one after another,
collects their JSON, and reports for every group the time per call, the time
*added* over the group's ``bare`` call, the target where the issue set one, and the
ratio of each peer's added time to buttress's.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / ".results"
_NOT_PYPERF = ("bench_alloc", "bench_webhooks", "bench_webhook_receiver")


@dataclass
class Row:
    group: str
    contender: str
    mean_ns: float
    stdev_ns: float
    peer: bool
    is_async: bool
    target_ns: float | None
    note: str


def run_scenario(script: Path, extra: list[str]) -> Path:
    OUT.mkdir(exist_ok=True)
    out = OUT / f"{script.stem}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, str(script), "-o", str(out), "--quiet", *extra]
    print(f"$ {' '.join(cmd[1:])}", flush=True)
    subprocess.run(cmd, check=True)
    return out


def load_rows(path: Path) -> list[Row]:
    data = json.loads(path.read_text())
    rows = []
    common = data.get("metadata", {})
    for bench in data["benchmarks"]:
        meta = {**common, **bench.get("metadata", {})}
        values = [v for run in bench["runs"] for v in run.get("values", [])]
        if not values:
            continue
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)
        rows.append(
            Row(
                group=meta["group"],
                contender=meta["contender"],
                mean_ns=mean * 1e9,
                stdev_ns=var**0.5 * 1e9,
                peer=meta.get("peer") == "1",
                is_async=meta.get("async") == "1",
                target_ns=float(meta["target_ns"]) if "target_ns" in meta else None,
                note=meta.get("note", ""),
            )
        )
    return rows


def fmt_ns(ns: float) -> str:
    if abs(ns) >= 10_000:
        return f"{ns / 1000:,.1f} µs"
    return f"{ns:,.0f} ns"


def render(rows: list[Row], title: str, command: str) -> str:
    lines = [
        "# Benchmark results",
        "",
        title,
        "",
        f"Command: `{command}`. Machine: {platform.machine()}, "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.release()}.",
        "",
        "*added* = time per call minus the group's `bare` call (the function called "
        "directly). *ratio* = the peer's added time divided by buttress's in the same "
        "group (higher means buttress is faster). Targets come from the issues.",
        "",
    ]
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.group, []).append(row)
    for group, members in groups.items():
        bare = next((r for r in members if r.contender == "bare"), None)
        base = bare.mean_ns if bare else 0.0
        ours = [r for r in members if r.contender.startswith("buttress")]
        reference = ours[0] if ours else None
        lines += [
            f"## {group}",
            "",
            "| contender | per call | added | target | verdict | ratio |",
            "|---|---:|---:|---:|---|---:|",
        ]
        for r in members:
            added = r.mean_ns - base if bare and r is not bare else None
            target = fmt_ns(r.target_ns) if r.target_ns is not None else ""
            verdict = ""
            if r.target_ns is not None and added is not None:
                missed = added - r.target_ns
                verdict = "met" if missed <= 0 else f"missed by {fmt_ns(missed)}"
            ratio = ""
            if r.peer and reference is not None and added is not None:
                ref_added = reference.mean_ns - base
                if ref_added > 0:
                    ratio = f"{added / ref_added:,.1f}×"
            added_s = ("+" + fmt_ns(added)) if added is not None else "—"
            name = r.contender + (f" ({r.note})" if r.note else "")
            lines.append(
                f"| {name} | {fmt_ns(r.mean_ns)} ± {fmt_ns(r.stdev_ns)} | {added_s} | {target} "
                f"| {verdict} | {ratio} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rigorous", action="store_true", help="more pyperf processes")
    parser.add_argument("--only", default="", help="substring filter on benchmark names")
    parser.add_argument("--scenario", action="append", default=[], help="bench_NAME to run")
    parser.add_argument("--output", default=str(HERE / "RESULTS.md"))
    parser.add_argument("--no-alloc", action="store_true", help="skip the allocation check")
    parser.add_argument("--no-relay", action="store_true", help="skip bench_relay.py's tables")
    args = parser.parse_args()
    extra = ["--rigorous"] if args.rigorous else ["--fast"]
    if args.only:
        extra += ["--only", args.only]
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.scenario:
        scripts = [s for s in scripts if s.stem in args.scenario or s.stem[6:] in args.scenario]
    # Not pyperf scripts: bench_alloc and bench_relay report tables of their own
    # (below); the webhook scripts run services and peers for minutes, by hand, and
    # their figures are kept in NOTES.md.
    scripts = [
        s for s in scripts if s.stem not in _NOT_PYPERF and not s.stem.startswith("bench_relay")
    ]
    rows: list[Row] = []
    for script in scripts:
        rows += load_rows(run_scenario(script, extra))
    command = "make bench" if not sys.argv[1:] else "python bench/run.py " + " ".join(sys.argv[1:])
    text = render(rows, "Overhead per call, measured side by side in one run.", command)
    alloc = HERE / "bench_alloc.py"
    if alloc.exists() and not args.no_alloc:
        print(f"$ {alloc.name}", flush=True)
        report = subprocess.run(
            [sys.executable, str(alloc)], check=True, capture_output=True, text=True
        ).stdout
        text += "\n" + report
    relay = HERE / "bench_relay.py"
    wanted = not args.scenario or any(
        name.startswith(("relay", "bench_relay")) for name in args.scenario
    )
    if relay.exists() and wanted and not args.no_relay:
        print(f"$ {relay.name} --markdown", flush=True)
        report = subprocess.run(
            [sys.executable, str(relay), "--markdown"], check=True, capture_output=True, text=True
        ).stdout
        text += "\n" + report
    notes = HERE / "NOTES.md"
    if notes.exists():
        text += "\n" + notes.read_text()
    Path(args.output).write_text(text)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
