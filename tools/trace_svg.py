"""Draw a polyarch build trace (`polyarch build --trace FILE`) as an SVG timeline.

    python tools/trace_svg.py trace.json out.svg

One row per (platform, stage) track, a bar per slice: steps that ran (emulated ones hatched
darker), cache hits as ticks, pulls and cache transfers in their own rows. For the README;
Perfetto shows the same file interactively.
"""

from __future__ import annotations

import html
import json
import sys
from pathlib import Path
from typing import Any

ROW, LABEL, WIDTH, PAD = 22, 260, 900, 6
COLOURS = {"run": "#4c8bf5", "emulated": "#e8710a", "io": "#9aa0a6", "error": "#d93025",
           "local": "#34a853", "imported": "#0f9d58"}  # fmt: skip


def render(trace: dict[str, Any]) -> str:
    events = trace["traceEvents"]
    processes = {e["pid"]: e["args"]["name"] for e in events if e.get("name") == "process_name"}
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
               if e.get("name") == "thread_name"}  # fmt: skip
    slices = [e for e in events if e.get("ph") == "X"]
    if not slices:
        raise SystemExit("the trace has no slices")
    end = max(e["ts"] + e["dur"] for e in slices) or 1
    rows = sorted({(e["pid"], e["tid"]) for e in slices},
                  key=lambda r: (processes.get(r[0], ""), threads.get(r, "")))  # fmt: skip
    height = PAD * 2 + ROW * (len(rows) + 2)
    scale = (WIDTH - LABEL - PAD) / end
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           'font-family="sans-serif" font-size="11">',
           f'<rect width="{WIDTH}" height="{height}" fill="white"/>']  # fmt: skip
    for n, row in enumerate(rows):
        y = PAD + n * ROW
        label = f"{processes.get(row[0], '?')} · {threads.get(row, '?')}"
        out.append(f'<text x="{PAD}" y="{y + 15}">{html.escape(label)}</text>')
        out.append(f'<line x1="{LABEL}" x2="{WIDTH - PAD}" y1="{y + ROW - 1}" '
                   f'y2="{y + ROW - 1}" stroke="#eee"/>')  # fmt: skip
        for e in (s for s in slices if (s["pid"], s["tid"]) == row):
            args = e.get("args", {})
            x = LABEL + e["ts"] * scale
            kind = ("error" if "error" in args else "io" if e.get("cat") == "io" else
                    "emulated" if args.get("emulated") else args.get("cache", "run"))  # fmt: skip
            width = max(2.0, e["dur"] * scale)
            title = html.escape(f"{e['name']} ({e['dur'] / 1e6:.1f} s, {kind})")
            out.append(
                f'<rect x="{x:.1f}" y="{y + 3}" width="{width:.1f}" height="{ROW - 7}" '
                f'fill="{COLOURS.get(kind, "#4c8bf5")}"><title>{title}</title></rect>'
            )
    axis = PAD + len(rows) * ROW + 14
    key_row = axis + ROW
    for t in range(0, int(end / 1e6) + 1, max(1, int(end / 1e6 / 10) or 1)):
        tick = LABEL + t * 1e6 * scale
        out.append(f'<text x="{tick:.1f}" y="{axis}" fill="#666">{t}s</text>')
    x = PAD
    for kind, text in (("run", "ran"), ("emulated", "ran emulated"), ("io", "pull / cache"),
                       ("local", "cached"), ("imported", "imported")):  # fmt: skip
        out.append(f'<rect x="{x}" y="{key_row - 9}" width="10" height="10" '
                   f'fill="{COLOURS[kind]}"/>')  # fmt: skip
        out.append(f'<text x="{x + 13}" y="{key_row}" fill="#444">{text}</text>')
        x += 13 + 7 * len(text) + 10
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    trace = json.loads(Path(sys.argv[1]).read_text())
    Path(sys.argv[2]).write_text(render(trace))


if __name__ == "__main__":
    main()
