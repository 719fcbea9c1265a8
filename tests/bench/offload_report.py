#!/usr/bin/env python3
"""Writes the "Kernel offload" section of docs/benchmarks.md from a tests/bench/offload.py
result file, between its markers (the rest of the page is compare.sh's)."""

import json
import sys
from pathlib import Path

BEGIN, END = "<!-- offload:begin -->", "<!-- offload:end -->"


def section(res, command):
    s = res["summary"]
    tc = s.get("turnpike-tc", {})
    rows = [
        "## Kernel offload (issue 15)",
        "",
        f"Command: `{command}` (root; about 10 minutes on 2 cores). The client, the TURN "
        "server and the echo peer each run in a network namespace, joined by veth pairs "
        "as pods are (`dataplane/bpf/netns.sh`, 198.18.0.0/15). Load: "
        f"{res['allocations']} allocations, {res['rate']:,} packets/s offered in total "
        f"(each echoed, so twice that relayed), 160-byte payloads, {res['secs']} s per run, "
        f"{res['rounds']} rounds with the servers alternating; {res['workers']} server "
        "threads where a server has them. Senders keep full checksums, as traffic from "
        "other machines has.",
        "",
        "**Relay cost** = (machine CPU with the relay − machine CPU of the same load sent "
        "straight to the echo and forwarded by the gateway namespace) / relayed packets. "
        "Machine CPU is every task's scheduler clock (`/proc/*/task/*/schedstat`), which "
        "charges softirq work to the task it interrupts.",
        "",
        "| server | relay cost µs/pkt | Turnpike TC is … cheaper | machine µs/pkt | "
        "p50 µs | p99 µs | lost | max loss-free pkt/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in s.items():
        if name == "direct":
            continue
        ratio = (f"{r['relay_cost_us'] / tc['relay_cost_us']:.1f}×"
                 if tc.get("relay_cost_us", 0) > 0 and name != "turnpike-tc" else "—")
        rows.append(
            f"| {r['label']} | {r['relay_cost_us']:.2f} | {ratio} | "
            f"{r['machine_cpu_us_per_pkt']:.2f} | {r['p50_us']} | {r['p99_us']} | "
            f"{r['lost']} | {r['max_loss_free'] or '—'} |")
    d = s["direct"]
    rows += [
        f"| {d['label']} (baseline) | 0 | — | {d['machine_cpu_us_per_pkt']:.2f} | "
        f"{d['p50_us']} | {d['p99_us']} | {d['lost']} | {d['max_loss_free'] or '—'} |",
        "",
    ]
    return "\n".join([BEGIN, *rows, END]) + "\n"


def main():
    res = json.loads(Path(sys.argv[1]).read_text())
    page = Path(sys.argv[2])
    text = page.read_text() if page.exists() else ""
    new = section(res, sys.argv[3])
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + new + text[text.index(END) + len(END) + 1:]
    else:
        text = text.rstrip("\n") + "\n\n" + new
    page.write_text(text)
    print(f"wrote the kernel offload section of {page}")


if __name__ == "__main__":
    main()
