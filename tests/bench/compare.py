#!/usr/bin/env python3
"""Side-by-side benchmark: the same load against Turnpike, coturn 4.6.1 (Debian), coturn
4.17.1 (built from source, when present) and STUNner stunnerd 1.2.1 (when built), in one
run on 127.0.0.1. Run it through tests/bench/compare.sh, which builds what it needs.

Experiments, in order (servers alternate within each, so none always goes first):
  search    maximum loss-free rate of each server (turnpike bench, 100 allocations)
  fixed     packets per server CPU-second, machine CPU per packet and RTT percentiles at
            a fixed offered load: half of coturn's maximum loss-free rate
  allocate  allocation cycles per second with full authentication
  hold      memory per idle allocation at 10,000 allocations (RSS + kernel)
  uclient   the cross-check: turnutils_uclient's own load, server CPU per relayed packet

--quick is the short form tests/run.sh runs: fewer, shorter rounds, no search (a fixed
load of 40,000 packets/s), no plots, and it fails when Turnpike loses packets or errs.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import servers as sv  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


class Bench:
    def __init__(self, binary, peer, work):
        self.binary, self.peer, self.work = binary, peer, Path(work)

    def run(self, server, mode_args, timeout=300):
        """Runs turnpike bench against server; returns its report with the server's and
        the machine's CPU over the run."""
        cmd = [self.binary, "bench", *mode_args, "--server", server.addr, "--secret",
               sv.SECRET, "--peer", f"127.0.0.1:{self.peer}", "--json", "-q"]
        machine_before, server_before = sv.machine_snapshot(), server.cpu_ns()
        t0 = time.monotonic()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        wall = time.monotonic() - t0
        server_cpu = (server.cpu_ns() - server_before) / 1e9
        machine = sv.machine_cpu_s(machine_before, sv.machine_snapshot())
        try:
            report = json.loads(out.stdout)
        except json.JSONDecodeError:
            raise RuntimeError(f"bench against {server.label} failed: {out.stderr[-2000:]}")
        report["server_cpu_s"] = server_cpu
        # The load threads have exited by now; they report their own CPU.
        report["machine_cpu_s"] = machine + report["loader_cpu_s"]
        report["wall_s"] = wall
        relayed = 2 * report["received"]
        report["relayed"] = relayed
        report["pkts_per_server_cpu_s"] = relayed / server_cpu if server_cpu else 0.0
        report["machine_cpu_us_per_pkt"] = 1e6 * report["machine_cpu_s"] / relayed if relayed else 0.0
        return report


def loss_free(r, rate):
    """No packet lost and the loader kept the offered rate (within 3 %)."""
    return r["lost"] == 0 and r["send_dropped"] == 0 and r["sent_per_s"] >= 0.97 * rate


def search(bench, server, secs, log):
    """Doubling from 20,000 packets/s until a loss, then five bisection steps; the
    answer is run once more and must hold again (near saturation one short trial can be
    lucky), else the search steps down by 5 % until a repeat holds."""
    trials, good, bad, rate = [], 0, None, 20000
    while rate <= 640000:
        r = bench.run(server, ["relay", "-n", "100", "--total-rate", str(rate), "-d", f"{secs}s"])
        trials.append({"rate": rate, **pick(r)})
        log(f"  search {server.label:<24} {rate:>7} pkt/s  lost {r['lost']:>6}  "
            f"server {r['server_cpu_s'] / r['duration_s']:.2f} cores")
        if loss_free(r, rate):
            good, rate = rate, rate * 2
        else:
            bad = rate
            break
    for _ in range(5 if bad else 0):
        mid = (good + bad) // 2
        r = bench.run(server, ["relay", "-n", "100", "--total-rate", str(mid), "-d", f"{secs}s"])
        trials.append({"rate": mid, **pick(r)})
        log(f"  search {server.label:<24} {mid:>7} pkt/s  lost {r['lost']:>6}")
        if loss_free(r, mid):
            good = mid
        else:
            bad = mid
    while good > 20000:
        r = bench.run(server, ["relay", "-n", "100", "--total-rate", str(good), "-d", f"{secs}s"])
        trials.append({"rate": good, "repeat": True, **pick(r)})
        log(f"  search {server.label:<24} {good:>7} pkt/s  lost {r['lost']:>6}  (repeat)")
        if loss_free(r, good):
            break
        good = int(good * 0.95)
    return {"max_loss_free": good, "first_loss": bad, "trials": trials}


def pick(r):
    keys = ["sent", "received", "lost", "send_dropped", "sent_per_s", "duration_s",
            "server_cpu_s", "machine_cpu_s", "relayed", "pkts_per_server_cpu_s",
            "machine_cpu_us_per_pkt", "rtt_us", "errors", "allocations",
            "allocations_per_s", "loader_cpu_s", "retransmissions"]
    return {k: r[k] for k in keys if k in r}


def rotate(items, k):
    k %= len(items)
    return items[k:] + items[:k]


def uclient(server, peer, clients, messages, log):
    """coturn's turnutils_uclient against server (ChannelData, 1 ms pacing), retried on
    its channel-number quirk: it binds channel N to peer port+1 and then picks a random
    number for the peer itself; 1 time in 4,096 that is N again, the server rightly
    answers 400 (RFC 8656 §12) and uclient aborts the run. Retries are counted."""
    retries = 0
    for _ in range(4):
        before = server.cpu_ns()
        out = subprocess.run(
            ["turnutils_uclient", "-p", str(server.port), "-e", "127.0.0.1", "-r", str(peer),
             "-m", str(clients), "-n", str(messages), "-l", "160", "-z", "1", "-c", "-X",
             "-W", sv.SECRET, "127.0.0.1"], capture_output=True, text=True, timeout=600)
        cpu = (server.cpu_ns() - before) / 1e9
        text = out.stdout + out.stderr
        lost = re.findall(r"Total lost packets (\d+)", text)
        rtt = re.findall(r"Average round trip delay ([0-9.]+) ms", text)
        if lost and rtt:
            lost = int(lost[-1])
            relayed = 2 * (clients * messages - lost)
            return {"lost": lost, "avg_rtt_ms": float(rtt[-1]), "server_cpu_s": cpu,
                    "relayed": relayed, "pkts_per_server_cpu_s": relayed / cpu if cpu else 0,
                    "retries": retries}
        retries += 1
        log(f"  uclient {server.label}: run failed, retrying: {text.strip()[-300:]}")
    raise RuntimeError(f"turnutils_uclient failed 4 times against {server.label}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=str(ROOT / "target/release/turnpike"))
    ap.add_argument("--coturn-417", default=os.environ.get("COTURN_417_BIN", ""))
    ap.add_argument("--stunnerd", default=os.environ.get("STUNNERD_BIN", ""))
    ap.add_argument("--baseline", default="", help="an earlier turnpike binary, as a fifth server")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--load", type=int, default=0, help="fixed offered load, packets/s")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--out", default=str(ROOT / "target/bench"))
    ap.add_argument("--docs", action="store_true", help="write docs/benchmarks.md and its plots")
    args = ap.parse_args()
    quick = args.quick
    rounds = 1 if quick else args.rounds
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / "work"
    work.mkdir(exist_ok=True)

    def log(msg):
        print(msg, flush=True)

    p = sv.free_ports(10)
    peer = p[0]
    echo = subprocess.Popen([args.binary, "echo", "--listen", f"127.0.0.1:{peer}",
                             "--listen", f"127.0.0.1:{peer + 1}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    servers = [sv.turnpike(args.binary, p[1], p[2], peer, work, args.workers),
               sv.coturn("coturn-4.6.1", "coturn 4.6.1 (Debian)", "/usr/bin/turnserver", p[3],
                         work, args.workers)]
    if args.coturn_417 and Path(args.coturn_417).exists():
        servers.append(sv.coturn("coturn-4.17.1", "coturn 4.17.1", args.coturn_417, p[4], work,
                                 args.workers, extra=["--rfc5766-channel-numbers"]))
    if args.stunnerd and Path(args.stunnerd).exists():
        servers.append(sv.stunner(args.stunnerd, p[5], p[6], peer, work, args.workers))
    if args.baseline:
        # A config file of its own: a dataplane reloads the file it was started with.
        base = sv.turnpike(args.baseline, p[7], p[8], peer, work, args.workers,
                           name="baseline", label="Turnpike (baseline)")
        servers.append(base)
    bench = Bench(args.binary, peer, work)
    results = {"machine": machine_facts(), "servers": {s.name: s.label for s in servers},
               "quick": quick, "workers": args.workers}
    try:
        for s in servers:
            s.start()
        log("servers: " + ", ".join(f"{s.label} on {s.addr}" for s in servers))

        # The reference for the fixed load: coturn's maximum loss-free rate (4.17.1, else 4.6.1).
        ref = "coturn-4.17.1" if any(s.name == "coturn-4.17.1" for s in servers) else "coturn-4.6.1"
        if not quick:
            log("\n== maximum loss-free rate")
            results["search"] = {s.name: search(bench, s, 4, log) for s in servers}
        load = args.load or (results["search"][ref]["max_loss_free"] // 2 if not quick else 40000)
        results["fixed_load"] = load

        log(f"\n== fixed load: 100 allocations, {load} packets/s offered, {rounds} round(s)")
        fixed = {s.name: [] for s in servers}
        for rnd in range(rounds):
            for s in rotate(servers, rnd):
                r = bench.run(s, ["relay", "-n", "100", "--total-rate", str(load),
                                  "-d", "5s" if quick else "10s"])
                fixed[s.name].append(pick(r))
                log(f"  round {rnd + 1} {s.label:<24} lost {r['lost']:>6}  "
                    f"{r['pkts_per_server_cpu_s']:>9.0f} pkts/server-CPU-s  "
                    f"{r['machine_cpu_us_per_pkt']:.2f} µs machine CPU/pkt  "
                    f"p99 {r['rtt_us']['p99']} µs")
        results["fixed"] = fixed

        log("\n== allocations per second (challenge, allocate, refresh, delete)")
        alloc = {s.name: [] for s in servers}
        for rnd in range(rounds):
            for s in rotate(servers, rnd):
                r = bench.run(s, ["allocate", "--sources", "127.1.0.0/16", "-d",
                                  "3s" if quick else "5s", "--concurrency", "64"])
                alloc[s.name].append(pick(r))
                log(f"  round {rnd + 1} {s.label:<24} {r['allocations_per_s']:>8.0f}/s  "
                    f"errors {r['errors'] or 'none'}")
        results["allocate"] = alloc

        held = 2000 if quick else 10000
        log(f"\n== memory at {held} idle allocations (fresh server each)")
        results["hold"] = {s.name: hold(bench, s, held, log) for s in servers}

        log("\n== cross-check: turnutils_uclient, 100 clients x 1,000 x 160 B, 1 ms apart")
        cross = {s.name: [] for s in servers}
        for rnd in range(rounds):
            for s in rotate(servers, rnd):
                r = uclient(s, peer, 100, 200 if quick else 1000, log)
                cross[s.name].append(r)
                log(f"  round {rnd + 1} {s.label:<24} lost {r['lost']:>5}  "
                    f"{r['pkts_per_server_cpu_s']:>9.0f} pkts/server-CPU-s  retries {r['retries']}")
        results["uclient"] = cross
    finally:
        for s in servers:
            s.stop()
        echo.kill()
        echo.wait()

    summary = summarize(results)
    results["summary"] = summary
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"compare-{stamp}.json"
    path.write_text(json.dumps(results, indent=1))
    log("\n" + table(summary, results))
    log(f"results: {path}")
    if args.docs:
        import report as rp
        rp.write_docs(results, ROOT, path, sys.argv[1:])
    if quick:
        check_quick(results)


def hold(bench, server, n, log):
    """Memory of n idle allocations on a freshly started server: its RSS growth, plus the
    kernel objects (slab caches: sockets, inodes, files, epoll items) created between the
    load generator's `open` mark (its own sockets exist) and its `held` mark."""
    server.stop()
    server.start()
    mark = bench.work / f"{server.name}.mark"
    mark.unlink(missing_ok=True)
    rss0 = server.rss_kb()
    cmd = [bench.binary, "bench", "hold", str(n), "--server", server.addr, "--secret", sv.SECRET,
           "--peer", f"127.0.0.1:{bench.peer}", "--sources", "127.2.0.0/16", "-d", "4s",
           "--mark", str(mark), "--json", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    slab_open = sv.slab_objects() if wait_mark(mark, "open", proc) else {}
    held_ok = wait_mark(mark, "held", proc)
    time.sleep(0.5)
    slab_held, rss1 = sv.slab_objects(), server.rss_kb()
    out, err = proc.communicate(timeout=120)
    report = json.loads(out) if out.strip() else {"allocations": 0, "errors": {"bench": err[-500:]}}
    got = report.get("allocations", 0) if held_ok else 0
    kernel, apart = sv.kernel_growth(slab_open, slab_held)
    user = (rss1 - rss0) * 1024 / got if got else 0
    kernel = kernel / got if got else 0
    log(f"  {server.label:<24} {got} held  {user:>6.0f} B user + {kernel:>6.0f} B kernel "
        f"per allocation  errors {report.get('errors') or 'none'}")
    return {"allocations": got, "rss_before_kb": rss0, "rss_held_kb": rss1,
            "user_bytes_per_alloc": user, "kernel_bytes_per_alloc": kernel,
            "bytes_per_alloc": user + kernel,
            "apart_bytes_per_alloc": {k: v / got for k, v in apart.items()} if got else {},
            "errors": report.get("errors", {})}


def wait_mark(mark, phase, proc, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if mark.read_text().strip() == phase:
                return True
        except OSError:
            pass
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def median(xs):
    """Tail latency of one round swings with whatever else the machine did; the median
    round is the fair summary of several."""
    xs = sorted(xs)
    if not xs:
        return 0.0
    mid = len(xs) // 2
    return float(xs[mid]) if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def summarize(res):
    out = {}
    for name in res["servers"]:
        fixed = res["fixed"][name]
        relayed = sum(r["relayed"] for r in fixed)
        cpu = sum(r["server_cpu_s"] for r in fixed)
        machine = sum(r["machine_cpu_s"] for r in fixed)
        sent = sum(r["sent"] for r in fixed)
        lost = sum(r["lost"] for r in fixed)
        cross = res["uclient"][name]
        out[name] = {
            "pkts_per_server_cpu_s": relayed / cpu if cpu else 0,
            "machine_cpu_us_per_pkt": 1e6 * machine / relayed if relayed else 0,
            "loss_percent": 100 * lost / sent if sent else 0,
            "rtt_p50_us": median(r["rtt_us"]["p50"] for r in fixed),
            "rtt_p99_us": median(r["rtt_us"]["p99"] for r in fixed),
            "rtt_p999_us": median(r["rtt_us"]["p999"] for r in fixed),
            "max_loss_free": res.get("search", {}).get(name, {}).get("max_loss_free"),
            "allocations_per_s": mean(r["allocations_per_s"] for r in res["allocate"][name]),
            "bytes_per_alloc": res["hold"][name]["bytes_per_alloc"],
            "uclient_pkts_per_server_cpu_s":
                sum(r["relayed"] for r in cross) / max(1e-9, sum(r["server_cpu_s"] for r in cross)),
            "uclient_lost": sum(r["lost"] for r in cross),
            "uclient_retries": sum(r["retries"] for r in cross),
        }
    return out


def table(summary, res):
    rows = [("server", "pkts/srv-CPU-s", "µs CPU/pkt", "loss %", "p50 µs", "p99 µs",
             "max loss-free", "allocs/s", "B/alloc", "uclient pkts/CPU-s", "retries")]
    for name, s in summary.items():
        rows.append((res["servers"][name], f"{s['pkts_per_server_cpu_s']:.0f}",
                     f"{s['machine_cpu_us_per_pkt']:.2f}", f"{s['loss_percent']:.3f}",
                     f"{s['rtt_p50_us']:.0f}", f"{s['rtt_p99_us']:.0f}",
                     str(s["max_loss_free"] or "-"), f"{s['allocations_per_s']:.0f}",
                     f"{s['bytes_per_alloc']:.0f}", f"{s['uclient_pkts_per_server_cpu_s']:.0f}",
                     str(s["uclient_retries"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    tp = summary.get("turnpike", {})
    for name, s in summary.items():
        if name == "turnpike" or not s["pkts_per_server_cpu_s"]:
            continue
        lines.append(f"Turnpike / {res['servers'][name]}: "
                     f"{tp['pkts_per_server_cpu_s'] / s['pkts_per_server_cpu_s']:.2f}x packets per "
                     f"server CPU-second, {s['machine_cpu_us_per_pkt'] / tp['machine_cpu_us_per_pkt']:.2f}x "
                     f"less machine CPU per packet")
    return "\n".join(lines)


def machine_facts():
    facts = {"cores": os.cpu_count(), "kernel": os.uname().release}
    try:
        facts["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                            if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return facts


def check_quick(res):
    """The short form's assertions: Turnpike relays the fixed load without loss and every
    mode works against it. Ratios are printed, not asserted: a shared CI machine is too
    noisy for a hard threshold."""
    s = res["summary"]["turnpike"]
    problems = []
    if s["loss_percent"] > 0:
        problems.append(f"Turnpike lost {s['loss_percent']:.3f} % at the fixed load")
    if any(r["errors"] for r in res["fixed"]["turnpike"]):
        problems.append(f"Turnpike relay errors: {res['fixed']['turnpike']}")
    if any(r["errors"] for r in res["allocate"]["turnpike"]):
        problems.append(f"Turnpike allocate errors: {res['allocate']['turnpike'][0]['errors']}")
    if res["hold"]["turnpike"]["allocations"] != 2000:
        problems.append(f"Turnpike held {res['hold']['turnpike']['allocations']} of 2000")
    if s["uclient_lost"]:
        problems.append(f"uclient lost {s['uclient_lost']} packets through Turnpike")
    if problems:
        sys.exit("FAIL: " + "; ".join(problems))


if __name__ == "__main__":
    main()
