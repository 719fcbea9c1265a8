#!/usr/bin/env python3
"""Relay cost with kernel offload (issue 15), side by side in one run, in the topology
pods have: a client namespace (the load generator), a gateway namespace (the TURN server
under test) and a peer namespace (the echo), joined by veth pairs
(dataplane/bpf/netns.sh; 198.18.0.0/15). Run it through tests/bench/offload.sh.

relay cost = (machine CPU with the relay - machine CPU of the same load sent straight from
generator to echo, forwarded by the gateway namespace) / relayed packets

Machine CPU is every task's scheduler clock (/proc/*/task/*/schedstat), which also charges
softirq work to the task it interrupts; /proc/stat under-reports busy time on this VM kind.
Each relayed round trip is two relayed packets (client -> peer, peer -> client).

Servers alternate round by round. Senders keep full checksums (as traffic from other
machines has); see README "Kernel offload" for same-host senders.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import servers as sv  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "tpb"
CLIENT, GATEWAY, PEER = f"{PREFIX}-c", f"{PREFIX}-g", f"{PREFIX}-p"
LISTEN, RELAY, PEER_IP = "198.18.10.1", "198.18.20.1", "198.18.20.2"
PORT, ECHO, ADMIN = 3478, 9000, 18086


def sh(*cmd):
    subprocess.run(cmd, check=True, capture_output=True)


def in_ns(ns, *cmd):
    sh("ip", "netns", "exec", ns, *cmd)


def topology_up():
    sh(str(ROOT / "dataplane/bpf/netns.sh"), "up", PREFIX)
    for ns, dev in ((CLIENT, f"{PREFIX}-c0"), (PEER, f"{PREFIX}-p0")):
        in_ns(ns, "ethtool", "-K", dev, "tx", "off", "gro", "on")


def topology_down():
    subprocess.run([str(ROOT / "dataplane/bpf/netns.sh"), "down", PREFIX], capture_output=True)


def forwarding(on):
    """The gateway namespace forwards only for the direct baseline (a pod does not)."""
    v = "1" if on else "0"
    in_ns(GATEWAY, "sysctl", "-qw", f"net.ipv4.conf.all.forwarding={v}",
          f"net.ipv6.conf.all.forwarding={v}")


class Direct:
    """The baseline: no TURN server; the gateway namespace only forwards."""
    name, label, addr = "direct", "no relay (forwarded)", f"{LISTEN}:{PORT}"

    def start(self):
        forwarding(True)

    def stop(self):
        forwarding(False)

    def cpu_ns(self):
        return 0


def bench(binary, server, rate, allocations, secs, direct=False):
    cmd = ["ip", "netns", "exec", CLIENT, binary, "bench", "relay", "-n", str(allocations),
           "--total-rate", str(rate), "-d", f"{secs}s", "--server", server.addr,
           "--secret", sv.SECRET, "--peer", f"{PEER_IP}:{ECHO}", "--json", "-q"]
    if direct:
        cmd.append("--direct")
    before, server_before = sv.machine_snapshot(), server.cpu_ns()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 120)
    machine = sv.machine_cpu_s(before, sv.machine_snapshot())
    try:
        r = json.loads(out.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"bench against {server.label} failed: {out.stderr[-2000:]}")
    r["machine_cpu_s"] = machine + r["loader_cpu_s"]
    r["server_cpu_s"] = (server.cpu_ns() - server_before) / 1e9
    r["relayed"] = 2 * r["received"]
    return r


def loss_free(r, rate):
    return r["lost"] == 0 and r["send_dropped"] == 0 and r["sent_per_s"] >= 0.97 * rate


def search(binary, server, allocations, secs, log, start=20000, top=640000):
    """Doubling until a loss, four bisection steps, and the answer repeated once."""
    good, bad, rate = 0, None, start
    direct = isinstance(server, Direct)
    while rate <= top:
        r = bench(binary, server, rate, allocations, secs, direct)
        log(f"  search {server.label:<28} {rate:>7} pkt/s  lost {r['lost']}")
        if not loss_free(r, rate):
            bad = rate
            break
        good, rate = rate, rate * 2
    for _ in range(4 if bad else 0):
        mid = (good + bad) // 2
        r = bench(binary, server, mid, allocations, secs, direct)
        log(f"  search {server.label:<28} {mid:>7} pkt/s  lost {r['lost']}")
        good, bad = (mid, bad) if loss_free(r, mid) else (good, mid)
    while good >= start:
        r = bench(binary, server, good, allocations, secs, direct)
        log(f"  search {server.label:<28} {good:>7} pkt/s  lost {r['lost']}  (repeat)")
        if loss_free(r, good):
            break
        good = int(good * 0.95)
    return good


def make_servers(a, work):
    ns = dict(netns=GATEWAY)
    out = []
    for mode, label in (("TC", "Turnpike, offload TC"), ("XDP", "Turnpike, offload XDP"),
                        (None, "Turnpike, userspace")):
        name = f"turnpike-{(mode or 'user').lower()}"
        out.append(sv.turnpike(a.binary, PORT, ADMIN, ECHO, work, a.workers, listen=LISTEN,
                               peer_ip=PEER_IP, offload=mode, name=name, label=label, **ns))
    if a.coturn_417:
        out.append(sv.coturn("coturn-417", "coturn 4.17.1", a.coturn_417, PORT, work,
                             a.workers, listen=LISTEN, relay=RELAY, **ns))
    out.append(sv.coturn("coturn-461", "coturn 4.6.1 (Debian)", "/usr/bin/turnserver", PORT,
                         work, a.workers, listen=LISTEN, relay=RELAY, **ns))
    if a.stunnerd:
        out.append(sv.stunner(a.stunnerd, PORT, ADMIN + 1, ECHO, work, a.workers,
                              listen=LISTEN, peer_ip=PEER_IP, **ns))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", required=True)
    p.add_argument("--coturn-417", default="")
    p.add_argument("--stunnerd", default="")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rate", type=int, default=40000, help="fixed offered load, pkt/s")
    p.add_argument("--allocations", type=int, default=100)
    p.add_argument("--secs", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--search", action="store_true", help="also the maximum loss-free rate")
    p.add_argument("--json", default="")
    p.add_argument("--quick", action="store_true", help="one short round, TC and coturn only")
    a = p.parse_args()
    work = Path(a.json).parent if a.json else Path("/tmp/turnpike-offload-bench")
    work.mkdir(parents=True, exist_ok=True)
    logf = open(work / "offload-bench.log", "w")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")

    topology_up()
    echo = subprocess.Popen(["ip", "netns", "exec", PEER, a.binary, "echo", "--listen",
                             f"{PEER_IP}:{ECHO}", "--listen", f"{PEER_IP}:{ECHO + 1}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {}
    try:
        time.sleep(0.5)
        servers = [Direct()] + make_servers(a, work)
        if a.quick:
            servers = [s for s in servers if s.name in ("direct", "turnpike-tc", "coturn-461")]
            a.rounds, a.secs = 1, 4
        for k in range(a.rounds):
            for s in servers[k % len(servers):] + servers[:k % len(servers)]:
                forwarding(False)
                s.start()
                try:
                    r = bench(a.binary, s, a.rate, a.allocations, a.secs,
                              direct=isinstance(s, Direct))
                finally:
                    s.stop()
                results.setdefault(s.name, {"label": s.label, "runs": []})["runs"].append(r)
                log(f"round {k + 1} {s.label:<28} lost {r['lost']:>5}  machine "
                    f"{r['machine_cpu_s']:.2f} CPU-s  server {r['server_cpu_s']:.2f}  "
                    f"p99 {r['rtt_us']['p99']} µs")
        if a.search:
            for s in servers:
                forwarding(False)
                s.start()
                try:
                    results[s.name]["max_loss_free"] = search(
                        a.binary, s, a.allocations, 4, log)
                finally:
                    s.stop()
    finally:
        echo.kill()
        echo.wait()
        topology_down()
    summary = summarize(results)
    for name, row in summary.items():
        log(f"{row['label']:<28} relay cost {row['relay_cost_us']:6.2f} µs/pkt  "
            f"p50 {row['p50_us']:>5} µs  p99 {row['p99_us']:>5} µs  lost {row['lost']}"
            + (f"  max loss-free {row['max_loss_free']}" if row.get("max_loss_free") else ""))
    out = {"rate": a.rate, "allocations": a.allocations, "secs": a.secs,
           "rounds": a.rounds, "workers": a.workers, "summary": summary, "results": results}
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    if a.quick:
        tc = summary["turnpike-tc"]
        if tc["lost"] or tc["kernel_share"] < 0.95:
            sys.exit(f"offload quick check failed: {tc}")


def summarize(results):
    base = statistics.median(r["machine_cpu_s"] / max(r["received"], 1)
                             for r in results["direct"]["runs"])
    out = {}
    for name, res in results.items():
        runs = res["runs"]
        per_pkt = [(r["machine_cpu_s"] / max(r["received"], 1) - base) / 2 for r in runs]
        out[name] = {
            "label": res["label"],
            "relay_cost_us": 1e6 * statistics.median(per_pkt) if name != "direct" else 0.0,
            "machine_cpu_us_per_pkt": 1e6 * statistics.median(
                r["machine_cpu_s"] / max(r["relayed"], 1) for r in runs),
            "server_cpu_s": statistics.median(r["server_cpu_s"] for r in runs),
            "p50_us": int(statistics.median(r["rtt_us"]["p50"] for r in runs)),
            "p99_us": int(statistics.median(r["rtt_us"]["p99"] for r in runs)),
            "lost": sum(r["lost"] for r in runs),
            "max_loss_free": res.get("max_loss_free"),
            # Userspace CPU of the server against all the relay's CPU: near 0 when the
            # kernel relays.
            "kernel_share": 1.0 - min(1.0, statistics.median(r["server_cpu_s"] for r in runs)
                                      / max(1e-9, statistics.median(
                                          r["machine_cpu_s"] for r in runs))),
        }
    return out


if __name__ == "__main__":
    main()
