"""Scale: one real controller and one real sink driven by 16 to 1024 simulated workers.

Each worker count gets a fresh run: the sink and the controller as `leyline sink` and
`leyline controller` processes (CURVE on, every worker its own generated key), then
`leyline simulate` with 64 workers per process, every worker's epoch at the same instant, so
each epoch is a burst of all workers' signals arriving at once (issue 9's stress figure).

Figures per count, over the epochs (from the first epoch's start to the end of the run):
- decisions/s: the controller's decisions (WAITs too) per second of the run, and per second
  of its CPU (what one core of it could decide; the ceiling its load is measured against);
- signal-to-command latency p50 / p99 / max: from the send of a slot's fast signal to the
  worker's receipt of the command it led to, and the controller's part of it (to the send
  time in the command's header; one wall clock, one host);
- sink ingest: rows committed per second of the run, and per second of the sink's CPU;
- CPU % (of one core) and peak RSS of the controller and of the sink (from /proc);
- protocol: every command applied once, every worker's epochs stored, bus rejections.
The machine is shared (2 cores, other work running), so CPU-normalised figures are the ones
to compare across counts; `late_epochs` says when the simulated workers could not keep pace.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from bench._harness import progress
from bench.inference import percentile
from bus.security import Role, ensure_keys
from services.stack import free_ports, spawn_service

WORKER_COUNTS = (16, 64, 256, 1024)
EPOCHS = 12
EPOCH_S = 3.0
PER_PROCESS = 64
#: How long the simulated workers listen after their last epoch: past the signal-to-command
#: latency at 1,024 workers (p99 2.6-3.9 s here) and a resend, so the last epoch's commands
#: are acked, not cut off (`leyline simulate`'s 3 s left 113 of them unacked, 10 s none).
#: The figures end with the last epoch; only the acks and the simulator's CPU see it.
SETTLE_S = 10.0
_TICK_S = os.sysconf("SC_CLK_TCK")
#: The rejection reasons (lower case, as the workers report them) of a refused handshake.
_HANDSHAKE_REFUSALS = ("handshake_failed", "unauthenticated")
_MESSAGE_TABLES = ("events", "commands", "acks", "hellos", "field_reports", "seed_reports")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK_S


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of `pid` in MiB (`VmHWM`: its peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler:
    """Samples CPU seconds and RSS of some processes every `interval_s`, on a thread."""

    def __init__(self, pids: dict[str, int], interval_s: float = 0.25) -> None:
        self.pids = pids
        self.samples: dict[str, list[tuple[float, float, float]]] = {n: [] for n in pids}
        self._stop = threading.Event()
        self._interval = interval_s
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            now = time.time()
            for name, pid in self.pids.items():
                try:
                    self.samples[name].append((now, cpu_seconds(pid), rss_mib(pid)))
                except (OSError, IndexError, ValueError):
                    continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def window(self, name: str, start: float, end: float) -> tuple[float, float]:
        """(CPU seconds, peak RSS MiB) of `name` between `start` and `end` (unix times)."""
        inside = [s for s in self.samples[name] if start <= s[0] <= end]
        if len(inside) < 2:
            return 0.0, 0.0
        return inside[-1][1] - inside[0][1], max(s[2] for s in inside)


def _services_env(data: Path, keys: Path) -> tuple[dict[str, str], dict[str, str], list[str]]:
    commands, intake, sink_intake = (f"tcp://127.0.0.1:{p}" for p in free_ports(3))
    bus = {"LEYLINE_BUS_KEYS_DIR": str(keys)}
    sink = {**bus, "LEYLINE_SINK_INTAKE": sink_intake, "LEYLINE_SINK_DB": str(data / "sink.db")}
    controller = {
        **bus,
        "LEYLINE_CONTROLLER_COMMANDS": commands,
        "LEYLINE_CONTROLLER_INTAKE": intake,
        "LEYLINE_CONTROLLER_SINK": f"sink@{sink_intake}",
        "LEYLINE_CONTROLLER_JOURNAL": str(data / "controller-journal.db"),
        "LEYLINE_CONTROLLER_DEVICE": "cpu",
    }
    simulate = [
        f"--commands=controller@{commands}",
        f'--intake=["controller@{intake}", "sink@{sink_intake}"]',
    ]
    return sink, controller, simulate


def _start(
    data: Path, name: str, env: dict[str, str], profile: bool
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """`leyline <name>` as a process; under cProfile (to `<name>.prof`) when `profile`."""
    if not profile:
        return spawn_service(str(data), name, name, env)
    (data / "logs").mkdir(exist_ok=True)
    log = (data / "logs" / f"{name}.log").open("wb")
    command = [sys.executable, "-m", "cProfile", "-o", str(data / f"{name}.prof")]
    process = subprocess.Popen(
        [*command, "-m", "services.cli", name],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return process, log


def listen_overflows() -> int:
    """Connections this host's TCP listen queues dropped so far (every process's, not ours
    alone: read it as a delta over a run)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return int(table.get("ListenOverflows", 0))
    return 0


def _ms(us: float) -> float:
    return round(us / 1e3, 2)


def _children_cpu() -> float:
    """CPU seconds of every waited-for child process (and theirs) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _stopped_line(log: Path, event: str) -> dict[str, Any]:
    """The JSON log line `event` of a service (its final counters); {} when absent."""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if event in line:
            try:
                found: dict[str, Any] = json.loads(line)
                return found
            except json.JSONDecodeError:
                continue
    return {}


def _stop(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _store_checks(db: Path, start_ns: int, end_ns: int, last_epoch_ns: int) -> dict[str, Any]:
    """Rows stored during the run, and what the record says of the protocol
    (`last_epoch_ns`: when the last epoch began)."""
    connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = sum(
            connection.execute(
                f"SELECT COUNT(*) FROM {table} WHERE sent_ns BETWEEN ? AND ?", (start_ns, end_ns)
            ).fetchone()[0]
            for table in _MESSAGE_TABLES
        )
        epochs = dict(
            connection.execute(
                "SELECT sender, COUNT(*) FROM events WHERE event_type = 'EPOCH_COMPLETED' "
                "GROUP BY sender"
            ).fetchall()
        )
        # Commands, not rows: a resend is a row of its own under the same command id.
        unacked = connection.execute(
            "SELECT COUNT(DISTINCT command_id), COUNT(DISTINCT CASE WHEN first_ns >= ? "
            "THEN command_id END) FROM (SELECT command_id, MIN(sent_ns) AS first_ns "
            "FROM commands WHERE command_id NOT IN (SELECT command_id FROM acks) "
            "GROUP BY command_id)",
            (last_epoch_ns,),
        ).fetchone()
        outcomes = connection.execute(
            "SELECT COUNT(*) FROM (SELECT command_id FROM acks WHERE outcome != 'DUPLICATE' "
            "GROUP BY command_id HAVING COUNT(DISTINCT outcome) > 1)"
        ).fetchone()[0]
        losses = connection.execute("SELECT COUNT(*) FROM losses").fetchone()[0]
        violations = connection.execute(
            "SELECT COUNT(*) FROM events WHERE event_type = 'CONTRACT_VIOLATION'"
        ).fetchone()[0]
    finally:
        connection.close()
    return {
        "rows": rows,
        "epochs_by_worker": epochs,
        "commands_unacked": unacked[0],
        # Of those, first sent after the last epoch began: answered, if at all, after the
        # simulated workers' settling time (`leyline simulate --settle-s`) ran out.
        "commands_unacked_last_epoch": unacked[1],
        "commands_two_outcomes": outcomes,
        "loss_rows": losses,
        "violation_events": violations,
    }


def run_count(
    workers: int,
    root: Path,
    keys: Path,
    *,
    epochs: int = EPOCHS,
    epoch_s: float = EPOCH_S,
    profile: bool = False,
    settle_s: float = SETTLE_S,
) -> dict[str, Any]:
    """One run: the services, `workers` simulated workers, and the figures of the run."""
    data = root / f"run-{workers}"
    data.mkdir(parents=True)
    sink_env, controller_env, connect = _services_env(data, keys)
    sink, sink_log = _start(data, "sink", sink_env, profile)
    controller, controller_log = _start(data, "controller", controller_env, profile)
    sampler = Sampler({"controller": controller.pid, "sink": sink.pid})
    results_path = data / "simulate.json"
    children_cpu, sim_started = _children_cpu(), time.time()
    overflows = listen_overflows()
    try:
        with (data / "logs" / "simulate.log").open("w") as simulate_log:
            simulate = subprocess.run(
            [
                sys.executable, "-m", "services.cli", "simulate",
                f"--workers={workers}", f"--per-process={PER_PROCESS}",
                f"--epochs={epochs}", f"--epoch-s={epoch_s}", f"--settle-s={settle_s}",
                f"--results={results_path}",
                f"--keys-dir={keys}", f"--data-dir={data}", *connect,
            ],
            stdout=simulate_log,
            stderr=subprocess.STDOUT,
            timeout=epochs * epoch_s + 600,
            check=False,
        )  # fmt: skip
        end = end_wall = time.time()
        simulated_cpu = _children_cpu() - children_cpu
        overflows = listen_overflows() - overflows
        if simulate.returncode != 0:
            raise RuntimeError(f"leyline simulate failed: see {data / 'logs' / 'simulate.log'}")
        results = json.loads(results_path.read_text())
    finally:
        sampler.stop()
        _stop(controller)
        _stop(sink)
        sink_log.close()
        controller_log.close()
    start = results["start_at"]
    end = min(end, start + epochs * epoch_s)
    controller_cpu, controller_rss = sampler.window("controller", start, end)
    sink_cpu, sink_rss = sampler.window("sink", start, end)
    logs = data / "logs"
    decided = _stopped_line(logs / "controller.log", "controller stopped")
    last_epoch_ns = int((start + (epochs - 1) * epoch_s) * 1e9)
    stored = _store_checks(data / "sink.db", int(start * 1e9), int(end * 1e9), last_epoch_ns)
    stored["rows_total"] = _store_checks(data / "sink.db", 0, 2**62, last_epoch_ns)["rows"]
    seconds = end - start
    latencies = sorted(us for w in results["workers"] for us in w["latencies_us"])
    inside = sorted(us for w in results["workers"] for us in w["controller_us"])
    decisions = int(decided.get("decided", 0))
    epochs_stored = stored.pop("epochs_by_worker")
    signals = sum(w["signals"] for w in results["workers"])
    return {
        "workers": workers,
        "seconds": round(seconds, 2),
        "decisions": decisions,
        "decisions_per_s": round(decisions / seconds, 1),
        "decisions_per_cpu_s": round(decisions / controller_cpu) if controller_cpu else None,
        "commands": int(decided.get("issued", 0)),
        "resent": int(decided.get("resent", 0)),
        "latency_samples": len(latencies),
        "latency_p50_ms": round(statistics.median(latencies) / 1e3, 2) if latencies else None,
        "latency_p99_ms": round(percentile(latencies, 0.99) / 1e3, 2) if latencies else None,
        "latency_max_ms": round(latencies[-1] / 1e3, 2) if latencies else None,
        "controller_part_p50_ms": _ms(statistics.median(inside)) if inside else None,
        "controller_part_p99_ms": _ms(percentile(inside, 0.99)) if inside else None,
        "sink_rows": stored["rows"],
        "sink_rows_per_s": round(stored["rows"] / seconds, 1),
        "sink_rows_per_cpu_s": round(stored["rows"] / sink_cpu) if sink_cpu else None,
        "controller_cpu_pct": round(100 * controller_cpu / seconds, 1),
        "controller_rss_mib": round(controller_rss, 1),
        "sink_cpu_pct": round(100 * sink_cpu / seconds, 1),
        "sink_rss_mib": round(sink_rss, 1),
        # Their whole run, start-up (torch imports, CURVE handshakes) included.
        "simulated_workers_cpu_pct": round(100 * simulated_cpu / (end_wall - sim_started), 1),
        "late_epochs": results["late_epochs"],
        "connect_s": results["connect_s"],
        "listen_overflows": overflows,
        "applied_more_than_once": sum(w["applied_more_than_once"] for w in results["workers"]),
        "commands_due_at_close": sum(w.get("due_at_close", 0) for w in results["workers"]),
        "farewells_unanswered": sum(1 for w in results["workers"] if not w["farewell_answered"]),
        "workers_with_all_epochs_stored": sum(1 for n in epochs_stored.values() if n == epochs),
        "bus_rejections_at_workers": sum(sum(w["rejections"].values()) for w in results["workers"]),
        "signals_heard_pct": round(100 * decisions / signals, 1) if signals else None,
        "handshakes_failed_at_workers": sum(
            counts.get(reason, 0)
            for w in results["workers"]
            for counts in (w["rejections"], w["publisher_refused"])
            for reason in _HANDSHAKE_REFUSALS
        ),
        **stored,
    }


def run(
    counts: Sequence[int] = WORKER_COUNTS,
    epochs: int = EPOCHS,
    epoch_s: float = EPOCH_S,
    profile: bool = False,
    keep: Path | None = None,
    settle_s: float = SETTLE_S,
) -> dict[str, Any]:
    """Figures per worker count (one fresh controller, sink and set of workers each)."""
    with tempfile.TemporaryDirectory(prefix="leyline-scale-") as scratch:
        root = keep or Path(scratch)
        keys = root / "keys"
        wanted = {"controller": Role.CONTROLLER, "sink": Role.SINK}
        wanted.update({f"sim{n}": Role.WORKER for n in range(1, max(counts) + 1)})
        ensure_keys(keys, wanted)
        per_count: dict[str, Any] = {}
        for workers in counts:
            figures = run_count(
                workers,
                root,
                keys,
                epochs=epochs,
                epoch_s=epoch_s,
                profile=profile,
                settle_s=settle_s,
            )
            per_count[str(workers)] = figures
            progress(
                f"workers={workers:5d}  {figures['decisions_per_s']:8.1f} decisions/s "
                f"({figures['decisions_per_cpu_s']} per CPU s)  "
                f"p99 {figures['latency_p99_ms']} ms  "
                f"sink {figures['sink_rows_per_s']:8.1f} rows/s  "
                f"controller {figures['controller_cpu_pct']}% {figures['controller_rss_mib']} MiB  "
                f"sink {figures['sink_cpu_pct']}% {figures['sink_rss_mib']} MiB  "
                f"late {figures['late_epochs']}"
            )
    return {"epochs": epochs, "epoch_s": epoch_s, "per_process": PER_PROCESS, "counts": per_count}


def plot(figures: dict[str, Any], path: Path) -> None:
    """Each figure against the worker count, log-log, beside a line of slope 1 (linear)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = figures["counts"]
    workers = [int(n) for n in counts]
    panels = [
        ("decisions / s", [("decided", "decisions_per_s")]),
        ("signal-to-command latency (ms)", [("p50", "latency_p50_ms"), ("p99", "latency_p99_ms")]),
        ("sink rows / s", [("stored", "sink_rows_per_s")]),
        ("CPU % of one core", [("controller", "controller_cpu_pct"), ("sink", "sink_cpu_pct")]),
        ("peak RSS (MiB)", [("controller", "controller_rss_mib"), ("sink", "sink_rss_mib")]),
        (
            "work per CPU second",
            [
                ("decisions (controller)", "decisions_per_cpu_s"),
                ("rows (sink)", "sink_rows_per_cpu_s"),
            ],
        ),
    ]
    figure, axes = plt.subplots(2, 3, figsize=(14, 8))
    for ax, (title, series) in zip(axes.flat, panels, strict=True):
        for label, key in series:
            values = [counts[str(n)][key] for n in workers]
            ax.plot(workers, values, marker="o", label=label)
        first = next(
            (counts[str(workers[0])][k] for _, k in series if counts[str(workers[0])][k]), None
        )
        if first and "per_s" in series[0][1]:
            ax.plot(workers, [first * n / workers[0] for n in workers], "k:", label="linear")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(workers, [str(n) for n in workers])
        ax.set_xlabel("simulated workers")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle(
        f"One controller and one sink (real processes, CURVE), {figures['epochs']} epochs "
        f"every {figures['epoch_s']:g} s, all workers at once"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--workers", type=int, nargs="+", default=list(WORKER_COUNTS))
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--epoch-s", type=float, default=EPOCH_S)
    parser.add_argument(
        "--settle-s",
        type=float,
        default=SETTLE_S,
        help="how long the simulated workers listen after their last epoch, for the last acks",
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the controller and the sink"
    )
    parser.add_argument("--keep", type=Path, help="keep each run's files (and profiles) here")
    parser.add_argument("--plot", type=Path, help="draw the figures into this PNG")
    parser.add_argument("--from-json", type=Path, help="plot figures printed by an earlier run")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        figures = json.loads(args.from_json.read_text())
    else:
        figures = run(
            args.workers, args.epochs, args.epoch_s, args.profile, args.keep, args.settle_s
        )
        print(json.dumps({"benchmark": "scale", **figures}), flush=True)
    if args.plot is not None:
        plot(figures, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
