"""findings.md and findings.html from findings.json (`overcommit findings`).

Each question gets its one-line question, who asked it in the thread (name and quote), the
answer as sentences with numbers and 95% CIs, a plot (per point, each mechanism's mean with its
CI, drawn with the report's matplotlib helpers), the command that reruns it and the
assumptions it rests on. An "Assumptions" section lists every device and cost figure the
answers use, with its value (from overcommit/profiles.py) and its source.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from overcommit.profiles import BUILTIN_DEVICES, Costs

#: Where each figure comes from (the calibration notes, /work/shared/REFERENCE.md, and the
#: comments of overcommit/profiles.py).
SOURCES: dict[str, str] = {
    "devices": "typical published figures for the device class (overcommit/profiles.py); not "
    "measured here",
    "costs.io_exit": "one virtio kick + completion interrupt, a typical published figure "
    "(overcommit/profiles.py); the thread's exit-cost argument",
    "costs.hypercall": "a typical Xen hypercall (overcommit/profiles.py); frontswap's cost per "
    "page (REFERENCE.md, Frontswap)",
    "costs.tmem_put": "Xen tmem: about 0.2% CPU overhead (REFERENCE.md, Xen tmem)",
    "costs.tmem_get": "Xen tmem: about 0.2% CPU overhead (REFERENCE.md, Xen tmem)",
    "costs.compress_bandwidth": "lzo-rle/lz4 class compressors (overcommit/profiles.py; "
    "REFERENCE.md, zswap / zram)",
    "costs.decompress_bandwidth": "lzo-rle/lz4 class compressors (overcommit/profiles.py; "
    "REFERENCE.md, zswap / zram)",
    "costs.ram_bandwidth": "a page copy at ~10 GB/s (overcommit/profiles.py)",
    "costs.major_fault": "the guest's fault path and I/O submission, a typical figure "
    "(overcommit/profiles.py); charged per swap-in read, not per frontswap get",
    "costs.minor_fault": "a zero-fill fault, a typical figure (overcommit/profiles.py); charged "
    "per frontswap get and first touch",
    "balloon": "virtio-balloon 7 GB in ~4.1 s, vmw_balloon 512-2048 pages/s under pressure "
    "(REFERENCE.md, Ballooning)",
    "migration": "pre-copy rounds and stop-and-copy (REFERENCE.md, Live migration; Clark et al., "
    "NSDI 2005)",
}


def assumption_value(key: str) -> str:
    """The value of an assumption key (`devices.san`, `costs.io_exit`, ...), as text."""
    head, _, rest = key.partition(".")
    if head == "devices" and rest in BUILTIN_DEVICES:
        d = BUILTIN_DEVICES[rest]
        return (
            f"read {d.read_latency * 1e6:g} us, write {d.write_latency * 1e6:g} us, "
            f"{d.iops:g} IOPS, {d.bandwidth / 1e6:g} MB/s"
        )
    if head == "costs" and hasattr(Costs, rest):
        v = getattr(Costs(), rest)
        return f"{v / 1e6:g} MB/s" if "bandwidth" in rest else f"{v * 1e6:g} us"
    return "see the scenario"


def assumption_source(key: str) -> str:
    return SOURCES.get(key) or SOURCES.get(key.partition(".")[0], "the scenario file")


def _plot(st: dict) -> Any | None:
    """Per point, each mechanism's mean of the answer's figure with its 95% CI."""
    points = st.get("points") or []
    if not points:
        return None
    from overcommit.report import _figure

    fig = _figure(9, 3.2)
    ax = fig.add_subplot()
    mechs = st["mechanisms"]
    width = 0.8 / max(1, len(mechs))
    words, unit = st["figure_words"]
    for i, m in enumerate(mechs):
        means, errs = [], []
        for p in points:
            vals = list(p["values"].get(m, {}).values())  # the first figure's, per seed
            if not vals:
                means.append(0.0)
                errs.append(0.0)
                continue
            from overcommit.compare import mean_ci

            mean, half = mean_ci(vals)
            means.append(mean)
            errs.append(half or 0.0)
        xs = [j + (i - (len(mechs) - 1) / 2) * width for j in range(len(points))]
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=m)
    ax.set_xticks(range(len(points)))
    slant = {"rotation": 30, "ha": "right", "fontsize": 7} if len(points) > 6 else {}
    ax.set_xticklabels([p["label"] or "all" for p in points], **slant)  # long grid labels
    ax.set_title(words + (f" ({unit})" if unit else "") + ", mean and 95% CI")
    ax.legend()
    return fig


def write_findings(out_dir: Path, doc: dict) -> tuple[Path, Path]:
    """Write findings.md (with a PNG per question) and findings.html in `out_dir`."""
    import matplotlib

    from overcommit.report import RC, _img, _page

    md = ["# Findings: the 2010 frontswap thread's questions", ""]
    mode = "quick" if doc.get("quick") else "full"
    md += [
        f"Mode: {mode}. Every number is a mean over seeds with its 95% CI (Student's t); "
        "ratios are taken per seed (both mechanisms see the same accesses) and then "
        "averaged. Only runs whose verdict is valid are used. A number without "
        "an interval comes from one seed.",
        "",
    ]
    parts = [f"<h1>Findings: the 2010 frontswap thread's questions</h1><p>Mode: {mode}.</p>"]
    keys: set[str] = set()
    not_yet: list[dict] = []
    with matplotlib.rc_context(RC):
        for st in doc["studies"]:
            if st["status"] != "answered":
                not_yet.append(st)
                continue
            keys.update(st["assumptions"])
            who = st["asked_by"]
            md += [f"## ({st['id']}) {st['question']}", ""]
            md += [f'Asked by {who["name"]}: "{who["quote"]}"', ""]
            md += [f"**Answer.** {st['answer']}", ""]
            parts.append(f"<h2>({html.escape(st['id'])}) {html.escape(st['question'])}</h2>")
            parts.append(
                f"<p>Asked by {html.escape(who['name'])}: <q>{html.escape(who['quote'])}</q></p>"
            )
            parts.append(f"<p><b>Answer.</b> {html.escape(st['answer'])}</p>")
            fig = _plot(st)
            if fig is not None:
                png = f"{st['id']}.png"
                fig.savefig(out_dir / png)
                md += [f"![{st['id']}]({png})", ""]
                parts.append(_img(fig, st["question"]))
            md += ["Reproduce: `" + st["command"] + "`", ""]
            if st.get("equivalent"):
                md += ["The same runs with sweep: `" + st["equivalent"] + "`", ""]
            md += ["Runs: " + ", ".join(f"`{p['dir']}`" for p in st["points"]), ""]
            md += ["Depends on: " + ", ".join(f"`{k}`" for k in st["assumptions"]), ""]
            parts.append(f"<p>Reproduce: <code>{html.escape(st['command'])}</code></p>")
            parts.append("<p>Depends on: " + html.escape(", ".join(st["assumptions"])) + "</p>")
    if not_yet:
        md += ["## Not yet answered", ""]
        parts.append("<h2>Not yet answered</h2><ul>")
        for st in not_yet:
            who = st["asked_by"]
            line = f"({st['id']}) {st['question']} Asked by {who['name']}. {st['reason']}"
            md += [f"- {line}"]
            parts.append(f"<li>{html.escape(line)}</li>")
        md += [""]
        parts.append("</ul>")
    md += ["## Assumptions", "", "| figure | value | source |", "|---|---|---|"]
    parts.append("<h2>Assumptions</h2><table><tr><th>figure</th><th>value</th><th>source</th></tr>")
    for k in sorted(keys):
        v, s = assumption_value(k), assumption_source(k)
        md += [f"| `{k}` | {v} | {s} |"]
        parts.append(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td><td>{html.escape(s)}</td></tr>"
        )
    parts.append("</table>")
    md_path = out_dir / "findings.md"
    md_path.write_text("\n".join(md) + "\n")
    html_path = out_dir / "findings.html"
    html_path.write_text(_page("findings", parts))
    return md_path, html_path
