#!/usr/bin/env python3
"""dagstart beside the tools users compare it with, on the same fake service.

    python3 benches/peers.py [--services 200] [--repeats 3] [--only dagstart,s6]

`DAGSTART_BIN=/path/to/dagstart` measures another build in place of target/release/dagstart
(two builds compared in the same hour, one after the other).

Installs the peers itself: honcho, supervisor and circus from PyPI in a private venv
(target/peers-venv), s6 and runit from Debian's packages (as root, daemons not started).
Peers that cannot be installed are left out of the table, with a word on stderr.

Scenarios (the "physical limit" issue's), each tool on the same fake service (`demo-svc`):

- fan-out: N independent services, each initialising for 100 ms and then listening on its own
  port. An external meter (this script) connects to every port until all accept: "ready" is
  the time from launching the tool to that moment. Then the tool gets SIGTERM; "stop" is the
  time until every service process and the tool itself have exited (watched through pidfds,
  to the poll's precision), and "left" counts services still accepting 5 s later.
  Memory is the tool's own peak RSS (its main process), CPU its own user+system time up to
  ready (children excluded; for bash the floor, the shell itself). The floor is a bash script
  that starts every service with `&` and, on SIGTERM, signals them and waits for them: its
  stop is what the services' own exits cost.
- chain: 20 services, each ready 50 ms after its start, each to start only once the one
  before it accepts connections. dagstart has dependencies (`depends_on` with tcp health);
  the others do not, so every service's command is wrapped in the wait loop users write
  (`until (exec 3<>/dev/tcp/127.0.0.1/$PORT); do sleep 0.001; done; exec ...`) and all are
  started at once; the floor is a bash script that starts each service and then runs that
  loop. "ready" is until the last one accepts.
- grandchildren: 20 services, each forking a grandchild that hangs (what a shell wrapper or
  a worker pool leaves behind); SIGTERM to the tool; "left" counts grandchildren still
  running 5 s later.

Runs are interleaved across tools, medians of `--repeats`. Needs `cargo build --release` first
(target/release/demo-svc and dagstart).
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
DEMO = os.path.join(RELEASE, "demo-svc")
DAGSTART = os.environ.get("DAGSTART_BIN", os.path.join(RELEASE, "dagstart"))
VENV = os.path.join(ROOT, "target", "peers-venv")
CLK = os.sysconf("SC_CLK_TCK")


def free_ports(n):
    held = [socket.socket() for _ in range(n)]
    for s in held:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in held]
    for s in held:
        s.close()
    return ports


def service(i, port, delay="100ms"):
    return [DEMO, "--name", f"w{i}", "--delay", delay, "--port", str(port)]


def install_peers():
    peers = {}
    if not os.path.exists(os.path.join(VENV, "bin", "python")):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=False)
    pip = os.path.join(VENV, "bin", "pip")
    if os.path.exists(pip):
        subprocess.run([pip, "install", "-q", "honcho", "supervisor", "circus"], check=False)
    for name, exe in [("honcho", "honcho"), ("supervisord", "supervisord"), ("circus", "circusd")]:
        path = os.path.join(VENV, "bin", exe)
        if os.path.exists(path):
            peers[name] = path
        else:
            print(f"{name}: not installed, left out", file=sys.stderr)
    if os.geteuid() == 0 and not (shutil.which("s6-svscan") and shutil.which("runsvdir")):
        policy = "/usr/sbin/policy-rc.d"
        made = not os.path.exists(policy)
        if made:
            with open(policy, "w") as f:
                f.write("#!/bin/sh\nexit 101\n")
            os.chmod(policy, 0o755)
        subprocess.run(["apt-get", "install", "-y", "-qq", "s6", "runit"],
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
                       stdout=subprocess.DEVNULL, check=False)
        if made:
            os.remove(policy)
    for name, exe in [("s6", "s6-svscan"), ("runit", "runsvdir")]:
        path = shutil.which(exe)
        if path:
            peers[name] = path
        else:
            print(f"{name}: not installed, left out", file=sys.stderr)
    return peers


def wait_for(port):
    """The wait loop users write (bash's /dev/tcp, a 1 ms sleep between attempts)."""
    return (f"until (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null; "
            f"do sleep 0.001; done")


# The floor's stop: on SIGTERM the script signals the services it started and waits for them
# (its own children only: a grandchild is not its business, as in the scripts users write).
STOP_ON_TERM = "trap 'kill $(jobs -p) 2>/dev/null; wait; exit 143' TERM\n"


def prepare(tool, exe, cmds, work, chain_ports=None):
    """The command that starts `tool` with the services `cmds`, in directory `work`. With
    `chain_ports`, service i must start only once port i-1 accepts."""
    line = lambda c: " ".join(c)
    if chain_ports and tool != "dagstart":
        # No dependencies in the tool: each command waits for the one before by itself, and
        # the floor starts each service after the one before answers.
        if tool == "bash (floor)":
            script = STOP_ON_TERM + "".join(
                (f"{wait_for(chain_ports[i - 1])}\n" if i else "") + f"{line(c)} &\n"
                for i, c in enumerate(cmds)) + "wait\n"
            with open(os.path.join(work, "start.sh"), "w") as f:
                f.write(script)
            return ["bash", "start.sh"]
        cmds = [c if i == 0 else
                ["bash", "-c", f"'{wait_for(chain_ports[i - 1])}; exec {line(c)}'"]
                for i, c in enumerate(cmds)]
    if tool == "bash (floor)":
        script = STOP_ON_TERM + "\n".join(f"{line(c)} &" for c in cmds) + "\nwait\n"
        with open(os.path.join(work, "start.sh"), "w") as f:
            f.write(script)
        return ["bash", "start.sh"]
    if tool == "dagstart":
        with open(os.path.join(work, "services.toml"), "w") as f:
            for i, c in enumerate(cmds):
                f.write(f"[services.w{i}]\ncommand = {c!r}\n".replace("'", '"'))
                if chain_ports:
                    f.write(f"port = {chain_ports[i]}\n")
                    if i:
                        f.write(f'depends_on = ["w{i - 1}"]\n')
        return [DAGSTART, "run"]
    if tool == "honcho":
        with open(os.path.join(work, "Procfile"), "w") as f:
            for i, c in enumerate(cmds):
                f.write(f"w{i}: {line(c)}\n")
        return [exe, "start"]
    if tool == "supervisord":
        with open(os.path.join(work, "supervisord.conf"), "w") as f:
            f.write(f"[supervisord]\nnodaemon=true\nlogfile={work}/supervisord.log\n"
                    f"pidfile={work}/supervisord.pid\n")
            for i, c in enumerate(cmds):
                f.write(f"[program:w{i}]\ncommand={line(c)}\nstartsecs=0\n"
                        f"stdout_logfile={work}/w{i}.log\nredirect_stderr=true\n")
        return [exe, "-n", "-c", os.path.join(work, "supervisord.conf")]
    if tool == "circus":
        with open(os.path.join(work, "circus.ini"), "w") as f:
            f.write("[circus]\ncheck_delay = 1\n")
            for i, c in enumerate(cmds):
                f.write(f"[watcher:w{i}]\ncmd = {line(c)}\nnumprocesses = 1\n")
        return [exe, os.path.join(work, "circus.ini")]
    if tool in ("s6", "runit"):
        scan = os.path.join(work, "scan")
        os.mkdir(scan)
        for i, c in enumerate(cmds):
            d = os.path.join(scan, f"w{i}")
            os.mkdir(d)
            with open(os.path.join(d, "run"), "w") as f:
                f.write(f"#!/bin/sh\nexec {line(c)}\n")
            os.chmod(os.path.join(d, "run"), 0o755)
        return [exe, scan]
    raise ValueError(tool)


def all_accept(ports):
    for p in ports:
        try:
            with socket.create_connection(("127.0.0.1", p), timeout=0.05):
                pass
        except OSError:
            return False
    return True


def services_alive(ports):
    alive = 0
    for p in ports:
        try:
            with socket.create_connection(("127.0.0.1", p), timeout=0.05):
                alive += 1
        except OSError:
            pass
    return alive


def own_usage(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    cpu_ms = (int(fields[11]) + int(fields[12])) * 1000 / CLK
    hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for l in f:
            if l.startswith("VmHWM:"):
                hwm = int(l.split()[1])
    return cpu_ms, hwm / 1024


def one_run(tool, exe, scenario, n):
    ports = free_ports(n)
    work = tempfile.mkdtemp(prefix="peers-")
    delay = "50ms" if scenario == "chain" else "100ms"
    cmds = [service(i, p, delay) for i, p in enumerate(ports)]
    if scenario == "grandchildren":
        cmds = [c + ["--grandchild-pid-file", os.path.join(work, f"g{i}.pid")]
                for i, c in enumerate(cmds)]
    cmd = prepare(tool, exe, cmds, work, ports if scenario == "chain" else None)
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    remaining = list(ports)
    deadline = started + 60
    while remaining and time.monotonic() < deadline:
        remaining = [p for p in remaining if not all_accept([p])]
        if remaining:
            time.sleep(0.001)
    ready_ms = (time.monotonic() - started) * 1000
    cpu_ms, rss_mib = own_usage(proc.pid)
    if scenario == "grandchildren":
        while len(grandchildren_running()) < n and time.monotonic() < deadline:
            time.sleep(0.01)
    # Each service process and the tool itself, by pidfd: "stop" is when the last of them
    # exited, to the poll's precision (connecting to every port again would add its own time).
    watched = [os.pidfd_open(pid) for pid in service_pids() + [proc.pid]]
    stop_started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    stop_ms = wait_all_exited(watched, stop_started + 10)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    time.sleep(max(0, stop_started + 5 - time.monotonic()))
    left = services_alive(ports)
    left_grandchildren = len(grandchildren_running())
    # Whatever a tool left behind must not disturb the next run.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    subprocess.run(["pkill", "-9", "-f", f"{DEMO} --name w"], check=False)
    subprocess.run(["pkill", "-9", "-f", GRANDCHILD], check=False)
    shutil.rmtree(work, ignore_errors=True)
    return ready_ms, rss_mib, cpu_ms, stop_ms, left, left_grandchildren


GRANDCHILD = f"{DEMO} --name grandchild --hang"


def service_pids():
    """The pids of the running fake services (`demo-svc --name wN`), as this script sees them."""
    return [pid for pid, argv, _ in processes()
            if len(argv) > 2 and argv[0] == DEMO.encode() and argv[1] == b"--name"
            and argv[2].startswith(b"w")]


def processes():
    """(pid, argv, state) of every process this script can see."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().rstrip(b"\0").split(b"\0")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(") ", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        yield int(entry), argv, state


def wait_all_exited(pidfds, deadline):
    """Milliseconds from now until every pidfd polled readable (its process exited), infinite
    when some had not by `deadline`; closes the pidfds."""
    import select
    started = time.monotonic()
    poller = select.poll()
    for fd in pidfds:
        poller.register(fd, select.POLLIN)
    left = len(pidfds)
    while left and time.monotonic() < deadline:
        for fd, _ in poller.poll(max(0, int((deadline - time.monotonic()) * 1000))):
            poller.unregister(fd)
            left -= 1
    took = (time.monotonic() - started) * 1000
    for fd in pidfds:
        os.close(fd)
    return float("inf") if left else took


def grandchildren_running():
    """The pids of demo-svc grandchildren still running (found by command line: the pids the
    services write are those of their PID namespace under dagstart)."""
    return [pid for pid, argv, state in processes()
            if b" ".join(argv).decode(errors="replace") == GRANDCHILD and state != "Z"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="",
                        help="comma-separated tools to run beside the floor (e.g. dagstart)")
    args = parser.parse_args()
    if not (os.path.exists(DEMO) and os.path.exists(DAGSTART)):
        sys.exit("build first: cargo build --release")
    peers = install_peers()
    tools = [("bash (floor)", "bash"), ("dagstart", DAGSTART)] + sorted(peers.items())
    if args.only:
        wanted = set(args.only.split(",")) | {"bash (floor)"}
        tools = [(t, e) for t, e in tools if t in wanted]
    scenarios = [("fan-out", args.services), ("chain", 20), ("grandchildren", 20)]
    results = {(sc, t): [] for sc, _ in scenarios for t, _ in tools}
    for _ in range(args.repeats):
        for scenario, n in scenarios:
            for tool, exe in tools:
                results[(scenario, tool)].append(one_run(tool, exe, scenario, n))
    med = lambda runs, k: statistics.median(r[k] for r in runs)
    stop_text = lambda ms: f"{ms:.0f} ms" if ms < 10000 else "not within 10 s"

    floor = med(results[("fan-out", "bash (floor)")], 0)
    print(f"| {args.services} independent services, 100 ms each (median of {args.repeats}) "
          "| ready | vs floor | own peak RSS | own CPU to ready | stop after SIGTERM | left 5 s after SIGTERM |")
    print("|---|---|---|---|---|---|---|")
    for tool, _ in tools:
        runs = results[("fan-out", tool)]
        print(f"| {tool} | {med(runs, 0):.0f} ms | {med(runs, 0) / floor:.2f}x | "
              f"{med(runs, 1):.1f} MiB | {med(runs, 2):.0f} ms | {stop_text(med(runs, 3))} | "
              f"{max(r[4] for r in runs)} |")
    print()
    floor = med(results[("chain", "bash (floor)")], 0)
    print(f"| chain of 20 services, each ready 50 ms after its start (median of {args.repeats}) "
          "| ready | vs floor | per level over the 50 ms |")
    print("|---|---|---|---|")
    for tool, _ in tools:
        ready = med(results[("chain", tool)], 0)
        print(f"| {tool} | {ready:.0f} ms | {ready / floor:.2f}x | {(ready - 1000) / 20:.1f} ms |")
    print()
    print(f"| 20 services, each with a grandchild that hangs; SIGTERM to the tool "
          f"(median of {args.repeats}) | stop | services left after 5 s | grandchildren left after 5 s |")
    print("|---|---|---|---|")
    for tool, _ in tools:
        runs = results[("grandchildren", tool)]
        print(f"| {tool} | {stop_text(med(runs, 3))} | {max(r[4] for r in runs)} | "
              f"{max(r[5] for r in runs)} of 20 |")


if __name__ == "__main__":
    main()
