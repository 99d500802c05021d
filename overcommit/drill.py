"""`overcommit drill`: a failover drill — one scenario's faults under several mechanisms.

Each mechanism (and seed) runs the same scenario with the same faults, the scenario's events and
its chaos schedule, and the drill puts side by side what the failures cost: how long until every
guest of a failed host ran again, which restarts failed and why, how much memory the survivors
had to reclaim and how long that took, how the survivors progressed meanwhile, double swaps,
the verdict and the hypothesis. `drill.json` holds it; each run keeps its run directory.

With real faults (`--real-faults`) every run gets a Ray cluster of its own on this machine
(`ray.cluster_utils.Cluster`: a head and one node per host, each host actor pinned to its node):
a `fail_host` event removes the host's Ray node, killing the host actor, its guests' actors and
its Redis server; the emulator learns of it only when its next call to the host fails, records
`fail_host` at that epoch (the event log then replays the run exactly), and goes on. A
`recover_host` event adds a node back for the host.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overcommit.compare import mean_ci, verdict
from overcommit.config import EVENT_ACTIONS, Scenario, apply_overrides

SCHEMA = "overcommit.drill/1"

#: Mechanisms a drill runs when none are named.
DEFAULT_MECHANISMS: tuple[str, ...] = ("none", "frontswap", "host-swap", "balloon")

#: Figures of each run that drill.json and the console report, with their means.
FIGURES: tuple[str, ...] = (
    "recovery_seconds",
    "restart_failures",
    "reclaim_needed_bytes",
    "reclaimed_bytes",
    "reclaim_seconds",
    "survivor_progress",
    "progress",
    "double_swaps",
    "guests_crashed",
    "tmem_pages_lost",
)


def figures(summary: dict) -> dict[str, Any]:
    """The drill's figures of one run (`recovery_seconds` None when a guest never came back)."""
    f, t = summary["failover"], summary["totals"]
    return {
        "recovery_seconds": f["recovery_seconds"],
        "restart_failures": f["restart_failures"],
        "reclaim_needed_bytes": f["reclaim_needed_bytes"],
        "reclaimed_bytes": f["reclaimed_bytes"],
        "reclaim_seconds": f["reclaim_seconds"],
        "survivor_progress": f["survivor_progress_during_recovery"],
        "progress": t["progress"],
        "double_swaps": t["double_swaps"],
        "guests_crashed": t["guests_crashed"],
        "tmem_pages_lost": t["tmem_pages_lost"],
    }


def failure_reasons(summary: dict) -> list[str]:
    """`guest: reason` for every restart that failed."""
    return [
        f"{x['guest']}: {x['reason']}"
        for ep in summary["failover"]["episodes"]
        for x in ep["failures"]
    ]


def replay_events(events: list[dict]) -> list[dict]:
    """The timeline events of an event log (as scenario `events`), skipped ones left out:
    faults a chaos schedule drew and real faults the driver detected become plain events, so a
    scenario with these events and no chaos reruns the run exactly."""
    out = []
    for ev in events:
        kind = ev["kind"]
        if kind not in EVENT_ACTIONS or "skipped" in ev:
            continue
        if kind in ("slow_storage", "network"):
            target: Any = {"factor": ev["factor"], "duration": ev["duration"]}
        elif EVENT_ACTIONS[kind] == "guest":
            target = ev["guest"]
        else:
            target = ev["host"]
        item = {"at": ev["t"], kind: target}
        if kind == "migrate":
            item.update(to=ev["to"], mode=ev["mode"])
        out.append(item)
    return out


def with_replay(scenario: Scenario, events: list[dict]) -> Scenario:
    """The scenario with its timeline replaced by an event log's (chaos off); a game day's
    log ends with an `end` line whose time becomes the duration."""
    overrides: dict[str, Any] = {"chaos": None, "events": replay_events(events)}
    ends = [ev["t"] for ev in events if ev.get("kind") == "end"]
    if ends:
        overrides["duration"] = ends[-1]
    return apply_overrides(scenario, overrides)


#: Event kinds that are faults (a drill's JUnit file has one test case per fault).
FAULT_KINDS = ("fail_host", "tmem_backend_failure", "slow_storage", "network", "stop_cooperating")


def outcome(summary: dict) -> tuple[list[dict], dict[str, list[str]], list[dict]]:
    """A run's faults (kind, target, time), its failed checkers with their evidence, and the
    hypothesis conditions it did not meet."""
    faults = [
        {"kind": e["kind"], "target": e.get("host") or e.get("guest"), "t": e["t"]}
        for e in summary["events"]
        if e["kind"] in FAULT_KINDS and "skipped" not in e
    ]
    checks = {k: v["evidence"] for k, v in summary["checks"].items() if not v["ok"]}
    hyp = summary["hypothesis"]
    conds = [] if hyp is None else [d for d in hyp["details"] if not d["ok"]]
    return faults, checks, conds


def junit_xml(report: dict) -> str:
    """drill.json as JUnit XML: a test suite per mechanism, a test case per run and fault
    (one per run without faults), failed when an invariant failed or the hypothesis was not
    met (a `within` clause counts against the failure it measured)."""
    from xml.etree import ElementTree as ET

    root = ET.Element("testsuites", name=f"drill {report['scenario']}")
    total = failed = 0
    for mech, m in report["mechanisms"].items():
        suite = ET.SubElement(root, "testsuite", name=f"{report['scenario']}.{mech}")
        cases = fails = 0
        for run in m["runs"]:
            faults = run["faults"] or [None]
            host_failures = [f for f in run["faults"] if f["kind"] == "fail_host"]
            for fault in faults:
                name = "no faults" if fault is None else (
                    f"{fault['kind']} {fault['target'] or ''} at {fault['t']:g}s".replace("  ", " ")
                )  # fmt: skip
                case = ET.SubElement(
                    suite,
                    "testcase",
                    classname=f"drill.{report['scenario']}.{mech}",
                    name=f"{name} (seed {run['seed']})",
                )
                problems = [
                    f"invariant {k} failed: {'; '.join(ev[:3])}"
                    for k, ev in run["failed_checks"].items()
                ]
                for c in run["failed_conditions"]:
                    value = c["value"]
                    if isinstance(value, list):  # `within D of each failure`: per failure
                        if fault is None or fault["kind"] != "fail_host":
                            continue
                        i = host_failures.index(fault)
                        value = value[i] if i < len(value) else None
                        if value is None or _holds(c["condition"], value):
                            continue
                    problems.append(f"hypothesis not met: {c['condition']} (value {value})")
                cases += 1
                if problems:
                    fails += 1
                    f = ET.SubElement(case, "failure", message=problems[0])
                    f.text = "\n".join(problems)
                out = ET.SubElement(case, "system-out")
                out.text = f"run directory: {run['dir']}"
        suite.set("tests", str(cases))
        suite.set("failures", str(fails))
        total, failed = total + cases, failed + fails
    root.set("tests", str(total))
    root.set("failures", str(failed))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _holds(condition: str, value: float) -> bool:
    from overcommit.config.events import parse_conditions

    (c,) = parse_conditions(condition.split(" within ", 1)[0])
    return c.holds(value)


def write_junit(report: dict, path: Path) -> None:
    from overcommit.output import atomic_write

    text = junit_xml(report)
    atomic_write(Path(path), lambda f: f.write(text))


@dataclass
class DrillRun:
    mechanism: str
    seed: int
    out_dir: Path
    valid: bool = False
    exit_code: int = 0
    hypothesis: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    faults: list[dict] = field(default_factory=list)
    failed_checks: dict[str, list[str]] = field(default_factory=dict)
    failed_conditions: list[dict] = field(default_factory=list)


@contextlib.contextmanager
def _fd_to_devnull(fd: int) -> Iterator[None]:
    """Send what this process (and the processes it starts meanwhile) writes to `fd` nowhere."""
    import os
    import sys

    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


class RealFaults:
    """Real node faults on a local Ray cluster: one node per host, removed and added back.

    Ray reports a removed node's death ("Raylet is terminated ...") on the standard output of
    the process that started it; the nodes are started with their output sent nowhere, and the
    drill keeps its own output until the cluster is gone."""

    def __init__(self, hosts: list[str]) -> None:
        from ray.cluster_utils import Cluster

        with _fd_to_devnull(2), _fd_to_devnull(1):  # Ray's start-up notes
            self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
            self.nodes = {h: self._add(h) for h in hosts}
            self.cluster.wait_for_nodes()
        self.killed: list[str] = []

    def _add(self, host: str) -> Any:
        with _fd_to_devnull(1):
            return self.cluster.add_node(num_cpus=1, resources={host: 1})

    @property
    def address(self) -> str:
        return self.cluster.address

    def kill(self, host: str) -> None:
        """Remove the host's Ray node: every process on it dies."""
        self.cluster.remove_node(self.nodes.pop(host), allow_graceful=False)
        self.killed.append(host)

    def revive(self, host: str) -> None:
        """A new Ray node for the repaired host."""
        self.nodes[host] = self._add(host)
        self.cluster.wait_for_nodes()

    def shutdown(self) -> None:
        self.cluster.shutdown()


@contextlib.contextmanager
def real_faults(scenario: Scenario) -> Iterator[RealFaults]:
    """A local multi-node Ray cluster for one run with real faults; shut down after it."""
    rf = RealFaults(scenario.host_names())
    try:
        yield rf
    finally:
        rf.shutdown()


#: A drill with real faults: hosts on Ray, each alone in its actor on the node named after it.
DRILL_RUNTIME = {"runtime.kind": "ray", "runtime.pin": "resource", "runtime.hosts_per_actor": 1}


def plan_drill(base: Scenario, mechanisms: list[str], seeds: int, real: bool) -> list:
    """(mechanism, scenario) per run; with real faults each runs on Ray, hosts pinned."""
    from overcommit.compare import plan_runs

    runs = plan_runs(base, mechanisms, seeds)
    if real:
        runs = [(m, apply_overrides(sc, DRILL_RUNTIME)) for m, sc in runs]
    return runs


def run_drill(
    runs: list[tuple[str, Scenario]],
    out_dir: Path,
    real: bool = False,
    on_run: Callable[[int, DrillRun], None] | None = None,
) -> dict:
    """Run every scenario, write each run directory and `drill.json`; returns its content."""
    from overcommit.cluster.engine import study_status
    from overcommit.cluster.runtime import InfrastructureError
    from overcommit.output import write_json

    done: list[DrillRun] = []
    for i, (mech, sc) in enumerate(runs):
        dr = DrillRun(mech, sc.seed, out_dir / f"{mech}-s{sc.seed}")
        try:
            result = _drill_run(sc, dr, real)
        except (InfrastructureError, KeyboardInterrupt, SystemExit) as exc:  # keep what is done
            report = summarise(runs[0][1], done, real)
            write_json(out_dir / "drill.json", study_status(report, exc, dr.out_dir))
            raise
        dr.valid = result.valid
        dr.exit_code = result.exit_code
        hyp = result.summary["hypothesis"]
        dr.hypothesis = None if hyp is None else hyp["status"]
        dr.figures = figures(result.summary)
        dr.reasons = failure_reasons(result.summary)
        dr.faults, dr.failed_checks, dr.failed_conditions = outcome(result.summary)
        done.append(dr)
        if on_run is not None:
            on_run(i, dr)
    report = study_status(summarise(runs[0][1] if runs else None, done, real), None)
    write_json(out_dir / "drill.json", report)
    return report


def _drill_run(sc: Scenario, dr: DrillRun, real: bool) -> Any:
    from overcommit.cluster.engine import run_scenario

    if not real:
        return run_scenario(sc, out_dir=dr.out_dir)
    # Ray reports each removed node's death ("Raylet is terminated ...") on this process's
    # stdout; those expected reports go to the run directory instead
    ray_says = io.StringIO()
    with contextlib.redirect_stdout(ray_says), real_faults(sc) as rf:
        result = run_scenario(sc, out_dir=dr.out_dir, address=rf.address, real_faults=rf)
    (dr.out_dir / "ray-messages.txt").write_text(ray_says.getvalue())
    return result


def summarise(scenario: Scenario | None, done: list[DrillRun], real: bool) -> dict:
    """The content of drill.json."""
    mechanisms: dict[str, dict] = {}
    for dr in done:
        m = mechanisms.setdefault(dr.mechanism, {"runs": []})
        m["runs"].append(
            {
                "seed": dr.seed,
                "dir": str(dr.out_dir),
                "valid": dr.valid,
                "exit_code": dr.exit_code,
                "hypothesis": dr.hypothesis,
                "restart_failure_reasons": dr.reasons,
                "faults": dr.faults,
                "failed_checks": dr.failed_checks,
                "failed_conditions": dr.failed_conditions,
                **dr.figures,
            }
        )
    for m in mechanisms.values():
        runs = m["runs"]
        m["mean"] = {}
        for f in FIGURES:
            values = [r[f] for r in runs]
            # a run where some guest never came back has no recovery time: no mean either
            m["mean"][f] = None if any(v is None for v in values) else mean_ci(values)[0]
        m["valid"] = all(r["valid"] for r in runs)
        m["verdict"] = verdict(runs)
    return {
        "schema": SCHEMA,
        "scenario": None if scenario is None else scenario.name,
        "real_faults": real,
        "seeds": sorted({dr.seed for dr in done}),
        "figures": list(FIGURES),
        "mechanisms": mechanisms,
    }
