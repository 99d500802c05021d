"""Words and units for `report.html`: the two-sentence headline of a run, compare, drill or
sweep page, figures in human units (µs/ms/s, MiB/GiB, %), and the grouping of a run's totals
into work, memory traffic, mechanism, and faults and recovery (the rest folded away).

Everything here works on the files a directory holds (`summary.json`, `events.jsonl`,
`guests.parquet`, `compare.json`, `drill.json`, `sweep.json`) and returns plain text; the page
is assembled in `overcommit.report`.
"""

from __future__ import annotations

import math
from typing import Any

#: The run report's totals, by group; keys absent from a summary are skipped. Within
#: `mechanism` and `faults and recovery` only non-zero figures are listed (a run without
#: faults shows none); every total not listed goes to the folded "all other totals".
TOTAL_GROUPS: dict[str, tuple[str, ...]] = {
    "work": (
        "progress",
        "stall_seconds",
        "downtime_seconds",
        "alive_seconds",
        "fault_latency_p50",
        "fault_latency_p99",
        "fault_latency_p999",
        "faults",
        "major_faults",
    ),
    "memory traffic": (
        "disk_reads",
        "disk_writes",
        "disk_read_ops",
        "disk_write_ops",
        "file_reads",
        "file_writes",
        "frontswap_puts",
        "frontswap_put_failures",
        "frontswap_gets",
        "frontswap_flushes",
        "host_swap_ins",
        "host_swap_outs",
        "double_swaps",
    ),
    "mechanism": (
        "tmem_pages_peak",
        "tmem_stored_peak",
        "hswap_pages_peak",
        "balloon_inflated",
        "balloon_deflated",
        "balloon_lag_seconds",
        "selfshrink_pages",
        "tmem_shrink_pages",
        "cache_hits",
        "cache_writebacks",
        "cache_dropped",
        "cache_pages_peak",
        "zpool_stores",
        "zpool_loads",
        "zpool_rejects",
        "zpool_writebacks",
        "zpool_bytes_peak",
        "pages_merged",
        "cow_breaks",
        "shared_pages_peak",
        "cleancache_puts",
        "cleancache_hits",
        "cleancache_misses",
        "ephemeral_pages_peak",
    ),
    "faults and recovery": (
        "host_failures",
        "host_recoveries",
        "backend_failures",
        "guests_crashed",
        "ha_restarts",
        "restart_failures",
        "recovery_seconds",
        "tmem_pages_lost",
        "hswap_pages_lost",
        "cache_pages_lost",
        "lost_pages",
        "stale_reads",
        "guest_oom_kills",
        "host_oom_kills",
        "migrations_completed",
        "migrations_failed",
    ),
}
_ONLY_NONZERO = ("mechanism", "faults and recovery")

#: Counters that count pages (shown with their size too).
_PAGE_COUNTERS = {
    "disk_reads",
    "disk_writes",
    "file_reads",
    "file_writes",
    "frontswap_puts",
    "frontswap_put_failures",
    "frontswap_gets",
    "host_swap_ins",
    "host_swap_outs",
    "balloon_inflated",
    "balloon_deflated",
    "selfshrink_pages",
    "tmem_shrink_pages",
    "tmem_stored_peak",
}

#: What a stall source is, in words (summary.json `stall_by_source`).
STALL_WORDS = {
    "first_touch": "first touches",
    "host_alloc": "host allocation",
    "frontswap_get": "tmem gets",
    "frontswap_flush": "tmem flushes",
    "swap_read": "swap reads from disk",
    "reclaim_put": "tmem puts in reclaim",
    "reclaim_write": "disk writes in reclaim",
    "zpool_load": "compressed-pool loads",
    "compress": "compression",
    "host_swap_read": "host swap reads",
    "cow_break": "copy-on-write breaks",
    "file_read": "file reads",
    "cleancache_get": "cleancache gets",
    "migration": "live migration",
}


def _n3(x: float) -> str:
    """Three significant digits without exponent: 1.12, 12.3, 123, 1023."""
    a = abs(x)
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}".removesuffix(".0")
    return f"{x:.2f}".rstrip("0").rstrip(".") if a else "0"


def duration(s: float | None) -> str:
    """Seconds in the unit a person reads: 0, 501 ns, 12.3 µs, 1.12 ms, 4.5 s, 3 min 20 s."""
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "–"
    a = abs(s)
    if a == 0:
        return "0"
    if a < 1e-6:
        return f"{_n3(s * 1e9)} ns"
    if a < 1e-3:
        return f"{_n3(s * 1e6)} µs"
    if a < 1:
        return f"{_n3(s * 1e3)} ms"
    if a < 120:
        return f"{_n3(s)} s"
    return f"{int(s // 60)} min {s % 60:.0f} s"


def size(b: float | None) -> str:
    """Bytes as B, KiB, MiB or GiB (three significant digits; 1000 MiB and up in GiB)."""
    if b is None:
        return "–"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(b) >= scale * 1000 / 1024:
            return f"{_n3(b / scale)} {unit}"
    return f"{b:.0f} B"


def share(x: float | None) -> str:
    """A fraction as a percentage: 0.4403 -> 44.0%."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x * 100:.1f}%"


def human(key: str, v: Any, page_size: int | None = 4096) -> str:
    """A summary figure in human units, chosen by its name: `progress` as a fraction and a
    percentage, `*_seconds` and fault latencies in ns/µs/ms/s, `*_bytes*` in KiB/MiB/GiB,
    page counts with thousands separators and their size (when `page_size` is known)."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v).lower()
    if not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, float) and math.isnan(v):
        return "–"
    k = key.rsplit(".", 1)[-1] if key.startswith("stall_by_source.") else key
    if "progress" in key:
        return f"{v:.3f} ({share(v)})"
    if "latency" in key or k.endswith("_seconds") or key.startswith("stall_by_source."):
        return duration(float(v))
    if "bytes" in k:
        return size(float(v))
    if k.endswith(("_pages", "_pages_peak", "_pages_lost")) or k in _PAGE_COUNTERS:
        if v and page_size:
            return f"{v:,.0f} ({size(float(v) * page_size)})"
        return f"{v:,.0f}"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.4g}"
    return f"{v:,.0f}"


def flat_totals(totals: dict) -> dict[str, Any]:
    """summary.json totals with `fault_latency` as `fault_latency_p50/p99/p999` and without
    the nested `stall_by_source` (shown apart)."""
    out: dict[str, Any] = {}
    for k, v in totals.items():
        if isinstance(v, dict):
            continue
        out[k] = v
    fl = totals.get("fault_latency")
    if isinstance(fl, dict):
        out.setdefault("fault_latency_p50", fl.get("p50"))
        out.setdefault("fault_latency_p99", fl.get("p99"))
        out.setdefault("fault_latency_p999", fl.get("p99.9"))
    return out


def grouped_totals(totals: dict) -> tuple[dict[str, list[tuple[str, Any]]], list[tuple[str, Any]]]:
    """The totals by group (see TOTAL_GROUPS), and the rest (every other total)."""
    flat = flat_totals(totals)
    groups: dict[str, list[tuple[str, Any]]] = {}
    used: set[str] = set()
    for group, keys in TOTAL_GROUPS.items():
        rows = []
        for k in keys:
            if k not in flat:
                continue
            if group in _ONLY_NONZERO and not flat[k]:
                continue
            rows.append((k, flat[k]))
            used.add(k)
        groups[group] = rows
    rest = [(k, v) for k, v in flat.items() if k not in used]
    return groups, rest


def main_stall(totals: dict) -> tuple[str, float, float] | None:
    """(source, seconds, share of all stall) of the largest stall source, or None."""
    by = totals.get("stall_by_source") or {}
    total = sum(v for v in by.values() if v)
    if not total:
        return None
    src, secs = max(by.items(), key=lambda kv: kv[1] or 0)
    return src, secs, secs / total


def cluster_progress(guests: Any, epoch: float, start: float, end: float) -> float | None:
    """Work over the time every guest could have run, from `start` to `end` (emulated s): a
    guest without a host (crashed, not yet restarted) counts as no progress."""
    if guests is None or not len(guests):
        return None
    x = guests[(guests["t"] >= start - 1e-9) & (guests["t"] < end - 1e-9)]
    if not len(x):
        return None
    n = guests["guest"].nunique()
    epochs = x["epoch"].nunique()
    if not epochs:
        return None
    return float(x["work_s"].sum()) / (n * epochs * epoch)


def run_headline(summary: dict, events: list[dict], guests: Any = None) -> list[str]:
    """Two sentences saying what happened in a run: its faults (which host failed when, how
    many guests restarted after how long, how progress moved) or, without faults, the
    mechanism, the guests, progress and the main stall source."""
    sc = summary.get("scenario") or {}
    t = summary.get("totals") or {}
    mech = summary.get("mechanism")
    n_guests = len(summary.get("guests") or {})
    n_hosts = len(summary.get("hosts") or {}) or None
    secs = float(summary.get("emulated_seconds") or 0)
    epoch = float(sc.get("epoch", 0.1))
    window = min(10.0, secs / 4) if secs else 0.0
    fails = [e for e in events if e.get("kind") == "fail_host"]
    episodes = (summary.get("failover") or {}).get("episodes") or []
    stall = main_stall(t)
    stall_txt = (
        f"{duration(t.get('stall_seconds'))} of stall, {share(stall[2])} of it "
        f"{STALL_WORDS.get(stall[0], stall[0].replace('_', ' '))}"
        if stall
        else "no stall"
    )
    if fails:
        first = []
        for i, f in enumerate(fails[:3]):
            ep = next(
                (e for e in episodes if e.get("host") == f.get("host") and e.get("t") == f["t"]),
                None,
            )
            crashed = list(f.get("guests") or [])
            part = f"{f['host']} failed at {f['t']:g} s"
            restarted = [e for e in events if e.get("kind") == "ha_restart" and e["t"] >= f["t"]]
            restarted = [e for e in restarted if e.get("guest") in crashed]
            failed = [e for e in events if e.get("kind") == "restart_failed" and e["t"] >= f["t"]]
            failed = [e for e in failed if e.get("guest") in crashed]
            if not crashed:
                part += " with no guests on it"
            elif restarted:
                hosts = sorted({e["host"] for e in restarted})
                rec = ep.get("recovery_seconds") if ep else None
                after = (
                    duration(rec)
                    if rec is not None
                    else duration(max(e["t"] for e in restarted) - f["t"])
                )
                who = (
                    (
                        f"its {len(crashed)} guests"
                        if len(restarted) == len(crashed)
                        else f"{len(restarted)} of its {len(crashed)} guests"
                    )
                    if len(crashed) > 1
                    else "its guest"
                )
                part += (
                    f"; {who} ({', '.join(e['guest'] for e in restarted)}) restarted on "
                    f"{' and '.join(hosts)} after {after}"
                )
                if failed:
                    part += f", {len(failed)} failed to restart ({failed[0].get('reason')})"
            elif failed:
                part += f"; its {len(crashed)} guests failed to restart ({failed[0].get('reason')})"
            else:
                part += f"; its {len(crashed)} guests had not restarted by the end"
            first.append(part if i == 0 else part[0].lower() + part[1:])
        s1 = "; then ".join(first)
        if len(fails) > 3:
            s1 += f"; {len(fails) - 3} more host failures followed"
        before = cluster_progress(guests, epoch, max(0.0, fails[0]["t"] - 10), fails[0]["t"])
        end = cluster_progress(guests, epoch, secs - window, secs)
        during = (summary.get("failover") or {}).get("survivor_progress_during_recovery")
        if before is not None and end is not None:
            s2 = (
                f"The cluster's progress fell from {before:.2f} before the failure to "
                f"{end:.2f} in the last {window:g} s"
                if end < before - 0.05
                else f"The cluster's progress was {before:.2f} before the failure and "
                f"{end:.2f} in the last {window:g} s"
            )
            if during is not None:
                s2 += f" (survivors during recovery: {during:.2f})"
        else:
            s2 = f"The run's progress was {t.get('progress', 0):.2f}"
        s2 += f"; {mech} over the run: progress {t.get('progress', 0):.2f}, {stall_txt}."
        return [s1 + ".", s2]
    hosts_txt = f" on {n_hosts} host{'s' if n_hosts != 1 else ''}" if n_hosts else ""
    s1 = (
        f"{mech} with {n_guests} guest{'s' if n_guests != 1 else ''}{hosts_txt} over "
        f"{secs:g} emulated seconds: progress {t.get('progress', 0):.2f} "
        f"({share(t.get('progress'))}), {stall_txt}."
    )
    start = cluster_progress(guests, epoch, 0.0, window)
    end = cluster_progress(guests, epoch, secs - window, secs)
    if start is not None and end is not None and abs(end - start) > 0.05:
        verb = "fell" if end < start else "rose"
        s2 = (
            f"Progress {verb} from {start:.2f} in the first {window:g} s to {end:.2f} in the "
            f"last {window:g} s"
        )
    elif end is not None:
        s2 = f"Progress held at about {end:.2f} throughout"
    else:
        s2 = "No time series to say more"
    rej, puts = t.get("frontswap_put_failures") or 0, t.get("frontswap_puts") or 0
    if rej:
        s2 += f"; {rej:,} tmem puts were rejected ({puts:,} stored)"
    ooms = (t.get("guest_oom_kills") or 0) + (t.get("host_oom_kills") or 0)
    if ooms:
        s2 += f"; {ooms} OOM kill{'s' if ooms != 1 else ''}"
    return [s1, s2 + "."]


def compare_headline(report: dict, label: str = "compare") -> list[str]:
    """Two sentences for a compare page (the best and worst mechanism by progress and by
    stall) or a drill page (recovery per mechanism, the survivors' progress)."""
    mechs = report.get("mechanisms") or {}
    seeds = report.get("seeds") or []
    if not mechs:
        return ["No mechanism ran.", ""]

    def mean(m: str, key: str) -> float | None:
        v = (mechs[m].get("mean") or {}).get(key)
        return None if v is None else float(v)

    if label == "drill":
        parts = []
        for m in mechs:
            rec, rf = mean(m, "recovery_seconds"), mean(m, "restart_failures") or 0
            if rec is not None:
                txt = f"{m} recovered in {duration(rec)}"
            elif rf:
                txt = f"{m} never recovered"
            else:
                txt = f"{m} had not recovered by the run's end"
            if rf:
                txt += f" ({rf:g} failed restart{'s' if rf != 1 else ''})"
            parts.append(txt)
        s1 = (
            f"Host failures in {report.get('scenario')} ({len(seeds)} seed"
            f"{'s' if len(seeds) != 1 else ''}): " + "; ".join(parts) + "."
        )
        sp = {m: mean(m, "survivor_progress") for m in mechs}
        sp = {m: v for m, v in sp.items() if v is not None}
        if sp:
            best, worst = max(sp, key=sp.get), min(sp, key=sp.get)
            s2 = (
                f"The survivors kept most progress during recovery under {best} "
                f"({sp[best]:.2f}), least under {worst} ({sp[worst]:.2f})."
            )
        else:
            s2 = "No survivor progress was measured."
        return [s1, s2]
    prog = {m: mean(m, "progress") for m in mechs}
    prog = {m: v for m, v in prog.items() if v is not None}
    best, worst = max(prog, key=prog.get), min(prog, key=prog.get)
    s1 = (
        f"Over {len(seeds)} seed{'s' if len(seeds) != 1 else ''} of {report.get('scenario')}, "
        f"{best} made the most progress ({prog[best]:.2f}) and {worst} the least "
        f"({prog[worst]:.2f}), of {len(mechs)} mechanisms."
    )
    stall = {m: mean(m, "stall_seconds") for m in mechs}
    stall = {m: v for m, v in stall.items() if v is not None}
    p99 = {m: mean(m, "fault_latency_p99") for m in mechs}
    p99 = {m: v for m, v in p99.items() if v is not None}
    bad = [m for m, v in mechs.items() if v.get("verdict") not in ("valid", None)]
    s2 = ""
    if stall:
        low = min(stall, key=stall.get)
        s2 = f"Least stall: {low} ({duration(stall[low])})"
    if p99:
        lp = min(p99, key=p99.get)
        lead = "; lowest" if s2 else "Lowest"
        s2 += f"{lead} p99 fault latency (modelled): {lp} ({duration(p99[lp])})"
    s2 += (
        f"; {', '.join(bad)} not valid" if bad else "; every run valid" if s2 else "Every run valid"
    )
    return [s1, s2 + "."]


def sweep_headline(meta: dict, answers: list[str]) -> list[str]:
    """Two sentences for a sweep page: what ran, and the goal's answer (or none)."""
    runs = meta.get("runs") or {}
    grid = meta.get("grid") or {}
    s1 = (
        f"Sweep of {meta.get('scenario')} over "
        f"{', '.join(f'{k} ({len(v)} values)' for k, v in grid.items()) or 'no axis'} for "
        f"{', '.join(meta.get('mechanisms') or []) or 'the scenario mechanism'}: "
        f"{runs.get('executed', 0)} runs executed, {runs.get('skipped', 0)} skipped, "
        f"{runs.get('failed', 0)} failed."
    )
    if meta.get("goal") and answers:
        s2 = f"Goal {meta['goal']}: " + "; ".join(a.strip() for a in answers[:2])
        s2 += f"; {len(answers) - 2} more below." if len(answers) > 2 else "."
    elif meta.get("goal"):
        s2 = f"Goal {meta['goal']}: no answer yet."
    else:
        s2 = "No goal was given; the curves show progress against the first axis."
    return [s1, s2]
