#!/usr/bin/env python3
"""Janus EchoTest calls through Turnpike from a client behind a NAT router, in every
egress profile of tests/netlab/netlab.sh: success rate and time from the offer to ICE
connected (p50, p95), and which TURN transport carried the call.

    sudo tests/netlab/profiles.py [--calls 10] [--json FILE] [--shots DIR]

Starts the demo (examples/janus/run.sh up), switches the router's profile and NAT between
rows, stops everything at the end. Prints a Markdown table (the one in README.md).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "examples/janus/run.sh"
NETLAB = ROOT / "tests/netlab/netlab.sh"
CALL = ROOT / "tests/browser/janus-call.mjs"

# (row name, NAT, router profile, browser uses the HTTP proxy, calls should connect)
ROWS = [
    ("open", "cone", "open", False, True),
    ("open, symmetric NAT", "symmetric", "open", False, True),
    ("udp-blocked", "cone", "udp-blocked", False, True),
    ("tcp-443-only", "cone", "tcp-443-only", False, True),
    ("tls-443-only", "cone", "tls-443-only", False, True),
    ("http-proxy-only", "cone", "http-proxy-only", True, True),
    ("ipv6-only (the IPv6 Gateway)", "cone", "ipv6-only", False, True),
    ("web-only (no TURN transport passes)", "cone", "web-only", False, False),
]


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(p / 100 * len(values) + 0.5) - 1))
    return values[k]


def run_row(env, row, calls, shots):
    name, nat, profile, proxy, _ = row
    prefix = env["NETLAB_PREFIX"]
    subprocess.run([str(NETLAB), "nat", prefix, nat], check=True)
    subprocess.run([str(NETLAB), "profile", prefix, profile], check=True)
    flags = f"--ignore-certificate-errors-spki-list={env['SPKI']}"
    if proxy:
        flags += f" --proxy-server={env['PROXY']}"
    shot = Path(shots) / f"{profile}-{nat}.png"
    out = subprocess.run(
        ["node", str(CALL), env["APP_URL6" if profile == "ipv6-only" else "APP_URL"],
         "echotest", str(shot), "1", str(calls)],
        env={**os.environ, "CLIENT_NS": env["CLIENT_NS"], "CHROMIUM_FLAGS": flags},
        capture_output=True, text=True, timeout=60 + calls * 40,
    )
    line = next((l for l in out.stdout.splitlines() if l.startswith("{")), None)
    if line is None:
        raise SystemExit(f"{name}: no result from the browser:\n{out.stdout}\n{out.stderr}")
    results = json.loads(line)["calls"]
    times, transports, failures, urls = [], {}, [], set()
    for c in results:
        marks = c.get("marks") or {}
        if c.get("state") == "connected" and "connected" in marks and "offer" in marks:
            times.append(marks["connected"] - marks["offer"])
            local = (c.get("stats") or {}).get("selected", {}).get("local") or {}
            transports[local.get("protocol")] = transports.get(local.get("protocol"), 0) + 1
            urls.add(local.get("url"))
        else:
            failures.append(c.get("error") or c.get("state"))
    return {
        "row": name, "nat": nat, "profile": profile, "proxy": proxy,
        "calls": len(results), "connected": len(times),
        "p50_ms": percentile(times, 50), "p95_ms": percentile(times, 95),
        "times_ms": times, "transports": transports, "failures": failures,
        "urls": sorted(u for u in urls if u),
        "screenshot": str(shot),
    }


def table(rows):
    lines = [
        "| client network | connected | offer → ICE connected p50 / p95 | TURN transport used |",
        "|---|---|---|---|",
    ]
    for r in rows:
        if r["connected"]:
            time = f"{r['p50_ms']} / {r['p95_ms']} ms"
            used = ", ".join(f"{k or '?'} ×{v}" for k, v in sorted(r["transports"].items()))
        else:
            time = "—"
            reason = (r["failures"] or ["?"])[0]
            used = f"none: fails at 10 s ({reason[:90]}…)" if len(reason) > 90 else f"none: {reason}"
        lines.append(f"| {r['row']} | {r['connected']}/{r['calls']} | {time} | {used} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--json")
    ap.add_argument("--shots", help="where the last call's screenshot of each row goes")
    args = ap.parse_args()
    state = tempfile.mkdtemp(prefix="turnpike-netlab-")
    shots = args.shots or state
    Path(shots).mkdir(parents=True, exist_ok=True)
    env_vars = {**os.environ, "NETLAB_PREFIX": os.environ.get("NETLAB_PREFIX", f"np{os.getpid() % 10000}")}
    try:
        subprocess.run([str(RUN), "up", state, "open", "cone"], check=True, env=env_vars)
        env = dict(l.split("=", 1) for l in Path(state, "env").read_text().split("\n") if "=" in l)
        rows = []
        for row in ROWS:
            r = run_row(env, row, args.calls, shots)
            r["expected_to_connect"] = row[4]
            rows.append(r)
            print(f"{r['row']}: {r['connected']}/{r['calls']} p50 {r['p50_ms']} p95 {r['p95_ms']} ms",
                  file=sys.stderr)
    finally:
        subprocess.run([str(RUN), "down", state], env=env_vars)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
