#!/usr/bin/env python3
"""Draws the dashboard's Overview row from a Prometheus, as Grafana would show it: each
panel's queries over a time range, one plot per panel, into one PNG. A person can look
at what the dashboard shows without a Grafana.

    render_overview.py PROMETHEUS_URL DASHBOARD_JSON OUT_PNG START END [STEP]

START and END are Unix seconds; $__rate_interval becomes 4 steps (at least 4 s), the
namespace and gateway variables match everything.
"""
import json
import math
import sys
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def overview_panels(dashboard):
    """The panels between the row titled Overview and the next row."""
    out, inside = [], False
    for p in dashboard["panels"]:
        if p["type"] == "row":
            inside = p["title"] == "Overview"
            continue
        if inside:
            out.append(p)
    return out


def expand(expr, rate_interval):
    return (expr.replace("$__rate_interval", rate_interval)
            .replace("$namespace", ".*").replace("$gateway", ".*"))


def query_range(prom, expr, start, end, step):
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prom}/api/v1/query_range?{q}", timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def legend(fmt, metric):
    text = fmt
    for k, v in metric.items():
        text = text.replace("{{" + k + "}}", v)
    return text


SCALE = {"bps": (1e-3, "kbit/s"), "pps": (1, "packets/s"), "s": (1e6, "µs"),
         "reqps": (1, "requests/s"), "ops": (1, "per second"), "short": (1, "")}


def main():
    prom, dash_path, out = sys.argv[1], sys.argv[2], sys.argv[3]
    start, end = float(sys.argv[4]), float(sys.argv[5])
    step = float(sys.argv[6]) if len(sys.argv) > 6 else 1.0
    rate_interval = f"{max(4, int(4 * step))}s"
    dashboard = json.load(open(dash_path))
    panels = overview_panels(dashboard)
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(15, 3.6 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        unit = panel["fieldConfig"]["defaults"].get("unit", "short")
        factor, label = SCALE.get(unit, (1, unit))
        drawn = 0
        for t in panel["targets"]:
            for series in query_range(prom, expand(t["expr"], rate_interval), start, end, step):
                xs = [float(ts) - start for ts, _ in series["values"]]
                ys = [float(v) * factor for _, v in series["values"]]
                name = legend(t.get("legendFormat", ""), series["metric"]) or t["refId"]
                if panel["type"] == "stat":
                    ax.text(0.5, 0.5, f"{ys[-1]:.0f}", ha="center", va="center", fontsize=40)
                    ax.set_xticks([])
                    ax.set_yticks([])
                else:
                    ax.plot(xs, ys, label=name)
                drawn += 1
        ax.set_title(panel["title"])
        if panel["type"] != "stat":
            ax.set_xlabel("seconds")
            ax.set_ylabel(label)
            if drawn:
                ax.legend(fontsize="small")
        if not drawn:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", color="red")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{dashboard['title']} — Overview (from Prometheus, {end - start:.0f} s)")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    print(f"wrote {out}: {len(panels)} panels")


if __name__ == "__main__":
    main()
