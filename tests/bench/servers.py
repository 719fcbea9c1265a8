"""The TURN servers of the side-by-side benchmark, started the same way every time, and how
their CPU and memory are read.

CPU comes from the scheduler's own clock (/proc/PID/task/*/schedstat, nanoseconds on the
CPU), never from /proc/stat, which under-reports busy time on this VM kind.
"""

import os
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path

SECRET = "bench-secret"
REALM = "bench"


def free_ports(n):
    """n distinct ports free on 127.0.0.1 for UDP and TCP, all held until all are chosen."""
    held, ports = [], []
    while len(ports) < n:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        held.append(u)
        try:
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t.bind(("127.0.0.1", port))
            held.append(t)
            # Pairs (p, p+1) for the echo peer: uclient also sends to the port above.
            u2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u2.bind(("127.0.0.1", port + 1))
            held.append(u2)
        except OSError:
            continue
        ports.append(port)
    for s in held:
        s.close()
    return ports


def task_cpu_ns(pid):
    """Nanoseconds every live thread of pid has run."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def machine_snapshot():
    """{(pid, tid): ns} for every task on the machine."""
    snap = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    snap[(pid, tid)] = int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return snap


def machine_cpu_s(before, after):
    """CPU seconds the machine spent between two snapshots, over the tasks alive at the
    second (tasks that exited in between are counted by whoever knows them: the load
    generator reports its own threads)."""
    return sum(ns - before.get(key, 0) for key, ns in after.items()) / 1e9


# Slab caches that grow with a relay's sockets but are not the server's doing: procfs
# inodes appear when something lists /proc/PID/fd (a monitor), and connection tracking is
# the node's firewall, paid per 5-tuple by any server. Both are reported apart.
NOT_THE_SERVERS = {"proc_inode_cache": "procfs", "nf_conntrack": "conntrack"}


def slab_objects():
    """{cache: (active objects, object size)} from /proc/slabinfo (needs root)."""
    caches = {}
    with open("/proc/slabinfo") as f:
        for line in f.readlines()[2:]:
            parts = line.split()
            caches[parts[0]] = (int(parts[1]), int(parts[3]))
    return caches


def kernel_growth(before, after):
    """Bytes of kernel objects created between two slab_objects() snapshots: the
    server's, and apart from them those of NOT_THE_SERVERS."""
    own, apart = 0, {}
    for cache, (n, size) in after.items():
        grown = (n - before.get(cache, (0, size))[0]) * size
        if cache in NOT_THE_SERVERS:
            apart[NOT_THE_SERVERS[cache]] = grown
        else:
            own += grown
    return own, apart


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Server:
    """One TURN server process; `cmd` is built by the functions below. With `netns` it runs
    inside that network namespace (`ip netns exec` execs it: the pid stays the server's)."""

    def __init__(self, name, label, cmd, port, work, env=None, ready_wait=1.5,
                 listen="127.0.0.1", netns=None):
        self.name, self.label, self.cmd, self.port = name, label, cmd, port
        self.work, self.env, self.ready_wait = Path(work), env, ready_wait
        self.listen, self.netns = listen, netns
        self.proc = None

    @property
    def addr(self):
        return f"{self.listen}:{self.port}"

    def start(self):
        log = open(self.work / f"{self.name}.log", "ab")
        env = dict(os.environ, **(self.env or {}))
        cmd = (["ip", "netns", "exec", self.netns] if self.netns else []) + self.cmd
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     env=env, preexec_fn=_raise_nofile, cwd=self.work)
        time.sleep(self.ready_wait)
        if self.proc.poll() is not None:
            tail = (self.work / f"{self.name}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.label} exited at start:\n{tail}")

    def cpu_ns(self):
        return task_cpu_ns(self.proc.pid)

    def rss_kb(self):
        return rss_kb(self.proc.pid)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            # SIGKILL: stunnerd's SIGTERM waits for every allocation to end.
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None


def turnpike(binary, port, admin, peer, work, workers, listen="127.0.0.1",
             peer_ip="127.0.0.1", netns=None, offload=None, name="turnpike", label="Turnpike"):
    work = Path(work)
    (work / f"{name}.yaml").write_text(f"""version: v1alpha1
name: bench/turnpike
realm: {REALM}
auth: {{type: ephemeral, secret: {SECRET}}}
limits: {{maxAllocationsPerUser: 100000, maxConnectionRatePerIp: 100000}}
listeners:
  - name: bench
    protocol: TURN-UDP
    address: {listen}
    port: {port}
    routes: [bench/echo]
routes:
  - {{name: bench/echo, endpoints: ["{peer_ip}:{peer}-{peer + 1}"]}}
""")
    cmd = [binary, "dataplane", "--config", str(work / f"{name}.yaml"), "--workers",
           str(workers), "--admin", f"127.0.0.1:{admin}", "--drain-timeout", "0s"]
    if offload:
        cmd += ["--offload", offload]
    return Server(name, label, cmd, port, work, env={"RUST_LOG": "warn"}, listen=listen,
                  netns=netns)


def coturn(name, label, binary, port, work, workers, extra=(), listen="127.0.0.1",
           relay="127.0.0.1", netns=None):
    work = Path(work)
    (work / "empty.conf").write_text("")
    cmd = [binary, "-c", str(work / "empty.conf"), "-n", f"--listening-ip={listen}",
           f"--relay-ip={relay}", f"--listening-port={port}", f"--realm={REALM}",
           "--use-auth-secret", f"--static-auth-secret={SECRET}", "--allow-loopback-peers",
           "--no-cli", "--no-tcp-relay", "--no-tls", "--no-dtls", f"--relay-threads={workers}",
           f"--pidfile={work / (name + '.pid')}", "--no-stdout-log",
           f"--log-file={work / (name + '-turnserver.log')}", *extra]
    return Server(name, label, cmd, port, work, listen=listen, netns=netns)


def stunner(binary, port, health, peer, work, workers, listen="127.0.0.1",
            peer_ip="127.0.0.1", netns=None):
    work = Path(work)
    (work / "stunner.yaml").write_text(f"""version: v1
admin:
  name: bench/stunner
  loglevel: all:WARN
  healthcheck_endpoint: "http://127.0.0.1:{health}"
auth:
  type: ephemeral
  realm: {REALM}
  credentials:
    secret: {SECRET}
listeners:
  - name: bench/stunner/udp
    protocol: TURN-UDP
    address: {listen}
    port: {port}
    routes: [bench/echo]
clusters:
  - name: bench/echo
    type: STATIC
    endpoints: ["{peer_ip}:<{peer}-{peer + 1}>"]
""")
    cmd = [binary, "-u", str(workers), "-c", f"file://{work / 'stunner.yaml'}"]
    return Server("stunner", "STUNner stunnerd 1.2.1", cmd, port, work, ready_wait=2.5,
                  listen=listen, netns=netns)
