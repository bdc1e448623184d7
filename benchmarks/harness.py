"""Worker processes, the alternation that makes every comparison a same-run ratio, and the race to quality."""

import json
import os
import selectors
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class WorkerError(RuntimeError):
    pass


class Worker:
    """A benchmarks.worker process; `name` labels it in results and logs."""

    def __init__(self, name, spec, log_dir, env=None):
        self.name = name
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, cwd=ROOT,
            env={**os.environ, **(env or {})},
        )
        self.next_epoch = None  # the epoch the worker runs next, from its last "ready" message
        self.fd = self.proc.stdout.fileno()
        self.buffer = b""
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.fd, selectors.EVENT_READ)

    def send(self, **cmd):
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def expect(self, event, timeout=1800):
        """Reads messages until one with this event; raises with the log's tail on error or exit."""
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self._line(deadline, event, timeout))
            if msg.get("event") == "error":
                raise WorkerError(f"{self.name}: {msg['message']}. {self._tail()}")
            if msg.get("event") == event:
                return msg

    def _line(self, deadline, event, timeout):
        # Our own buffer over the raw pipe: a buffered readline could swallow a
        # second message that select() would then never announce.
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not self.selector.select(timeout=left):
                raise WorkerError(f"{self.name}: no {event!r} within {timeout:.0f} s. {self._tail()}")
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise WorkerError(f"{self.name} exited (code {self.proc.wait()}). {self._tail()}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def run_epoch(self):
        """One timed epoch; returns its report once the worker is idle again."""
        self.send(cmd="go")
        report = self.expect("epoch")
        self.next_epoch = self.expect("ready").get("epoch")
        return report

    def close(self):
        if self.proc.poll() is None:
            try:
                self.send(cmd="stop")
                self.proc.wait(timeout=30)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self.proc.kill()  # this worker only, by its own handle
                self.proc.wait()
        self.log.close()

    def _tail(self, n=3000):
        self.log.flush()
        with open(self.log_path) as f:
            return f"Log {self.log_path}:\n" + f.read()[-n:]


def start_all(specs, log_dir, timeout=600):
    """Starts the workers together (imports overlap), then waits until each is ready."""
    workers = [Worker(name, spec, log_dir, env=spec.get("env")) for name, spec in specs.items()]
    try:
        for w in workers:
            w.next_epoch = w.expect("ready", timeout).get("epoch")
    except BaseException:
        close_all(workers)
        raise
    return workers


def close_all(workers):
    for w in workers:
        w.close()


def alternate(workers, warmup, rounds, progress=None):
    """Warm-up epochs, then `rounds` rounds of one epoch per worker, order rotated each round.

    Returns {name: [report of each measured epoch]}, each report with its round.
    """
    progress = progress or (lambda msg: print(msg, flush=True))
    for i in range(warmup):
        for w in workers:
            r = w.run_epoch()
            progress(f"  warm-up {i + 1}/{warmup} {w.name}: {rate(r):,.0f} samples/s")
    reports = {w.name: [] for w in workers}
    for k in range(rounds):
        order = workers[k % len(workers):] + workers[: k % len(workers)]
        for w in order:
            r = w.run_epoch()
            r["round"] = k
            reports[w.name].append(r)
        line = ", ".join(f"{w.name} {rate(reports[w.name][-1]):,.0f}" for w in workers)
        progress(f"  round {k + 1}/{rounds}: {line} samples/s (load {os.getloadavg()[0]:.1f})")
    return reports


def race(workers, evaluator, dump, settings, thresholds, progress, started=None, on_epoch=None, resume=None):
    """Time to quality: epochs of `workers` in turn, each epoch's weights evaluated off the clock by `evaluator`.

    After its epoch E (from 0) a worker has dumped its weights to dump/NAME-E.npz
    and its report to dump/NAME-E.json; the evaluator screens them with k =
    settings["screen_k"], and runs the k = settings["k"] estimate that judges a
    crossing when the screen says the next threshold may be near: within
    settings["screen_margin"] nats of it, or, with settings["gap_margin"] and once
    a k estimate has run, when the screen minus the gap last seen between the two
    estimates is within gap_margin nats. A worker races until its k estimate is
    below every threshold; the order is reversed every other epoch. The race stops
    when all have crossed every threshold, after settings["max_epochs"] epochs, or,
    with settings["max_minutes"], at the first epoch boundary that many minutes
    after `started` (a time.monotonic(); default now).

    `resume`: the state a stopped race left (its last on_epoch dict), with workers
    that resumed their own training where it stopped. A worker one epoch ahead of
    its curve (stopped after the epoch, before the race recorded it) has that
    epoch's dump and report still on disk: it is recorded from them first.

    Returns {"curves": {name: [a point per epoch]}, "crossed": {name: {threshold_key(t): epoch}},
    "gaps": {name: screen minus k estimate, last seen}, "stopped": why}; `on_epoch(state)`, if given, is
    called after every recorded epoch of a worker with that dict as it stands.
    """
    from benchmarks.worker import dump_template, report_path  # where the workers write; the race reads there

    started = time.monotonic() if started is None else started
    thresholds = sorted(thresholds, reverse=True)
    dump_path = lambda w, epoch: dump_template(dump, w.name).format(epoch=epoch)
    fresh = {"curves": {w.name: [] for w in workers}, "crossed": {w.name: {} for w in workers},
             "gaps": {w.name: None for w in workers}}
    state = {**fresh, **json.loads(json.dumps(resume or {})), "stopped": None}  # a copy: the caller's stays
    curves, crossed, gaps = state["curves"], state["crossed"], state["gaps"]

    def evaluate(path, k):
        evaluator.send(cmd="eval", path=path, k=k)
        return evaluator.expect("eval", timeout=7200)

    def record(w, epoch, r):
        path = dump_path(w, epoch)
        screen = evaluate(path, settings["screen_k"])
        curve, done = curves[w.name], crossed[w.name]
        prev = curve[-1] if curve else {"clock_s": 0.0, "train_clock_s": 0.0}
        point = {
            "epoch": epoch + 1, "screen_nll": screen["nll"], "nll": None, "nll_stderr": None,
            "nll_mc_stderr": None, "clock_s": prev["clock_s"] + r["epoch_s"],
            "train_clock_s": prev["train_clock_s"] + r["train_s"], "loss": r["loss"],
            "eval_s": screen["eval_s"], "report": r,
        }
        target = next(t for t in thresholds if threshold_key(t) not in done)
        gap = gaps[w.name]
        near = (screen["nll"] < target + settings["screen_margin"] if gap is None
                else screen["nll"] - gap < target + settings["gap_margin"])
        if near:
            e = evaluate(path, settings["k"])
            if "gap_margin" in settings:
                gaps[w.name] = screen["nll"] - e["nll"]
            point.update(nll=e["nll"], nll_stderr=e["nll_stderr"], nll_mc_stderr=e.get("nll_mc_stderr"),
                         eval_s=point["eval_s"] + e["eval_s"])
            for t in thresholds:
                if threshold_key(t) not in done and e["nll"] < t:
                    done[threshold_key(t)] = epoch + 1
        curve.append(point)
        full = f"NLL {point['nll']:.2f} (k={settings['k']})" if point["nll"] is not None else "not evaluated"
        progress(f"  {w.name} epoch {epoch + 1}: screen NLL {screen['nll']:.2f} (k={settings['screen_k']}), "
                 f"{full}, at {point['clock_s']:.1f} s (evaluation {point['eval_s']:.1f} s, off the clock)"
                 + (f"; crossed {', '.join(k for k, v in done.items() if v == epoch + 1)}"
                    if epoch + 1 in done.values() else ""))
        if on_epoch:
            on_epoch(state)
        for leftover in (path, report_path(path)):  # a dump is a few MB; the curve keeps what was measured
            if os.path.exists(leftover):
                os.remove(leftover)

    for w in workers:
        recorded = len(curves[w.name])
        if w.next_epoch == recorded + 1:
            report_file = report_path(dump_path(w, recorded))
            if not os.path.exists(report_file):
                raise WorkerError(f"{w.name} is at epoch {w.next_epoch}, but the race recorded {recorded} epochs and "
                                  f"{report_file} is missing: that epoch cannot be scored. Start a new race.")
            with open(report_file) as f:
                record(w, recorded, json.load(f))
        elif w.next_epoch is not None and w.next_epoch != recorded:
            raise WorkerError(f"{w.name} is at epoch {w.next_epoch}, but the race recorded {recorded} epochs of it: "
                              "its training and the race's record disagree. Start a new race.")

    def finished(w):
        return len(crossed[w.name]) >= len(thresholds)

    for epoch in range(min(len(c) for c in curves.values()), settings["max_epochs"]):
        if all(finished(w) for w in workers):
            state["stopped"] = "every threshold crossed"
            break
        if "max_minutes" in settings and time.monotonic() - started > 60 * settings["max_minutes"]:
            state["stopped"] = f"max_minutes ({settings['max_minutes']:g})"
            break
        due = [w for w in workers if not finished(w) and len(curves[w.name]) == epoch]
        if epoch % 2:
            due.reverse()
        for w in due:
            record(w, epoch, w.run_epoch())
    else:
        state["stopped"] = (f"max_epochs ({settings['max_epochs']})" if not all(finished(w) for w in workers)
                            else "every threshold crossed")
    return state


def threshold_key(threshold):
    """How a threshold names its crossing: 228.0 -> "228"."""
    return f"{threshold:g}"


def progress_since(started):
    """The commands' progress printer: each message after the seconds since `started` (a time.time())."""
    def progress(msg):
        print(f"[{time.time() - started:6.0f} s] {msg}", flush=True)

    return progress


def rate(report):
    """Training samples per second of one epoch report."""
    return report["samples"] / report["train_s"]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def throughput_summary(reports):
    """Per contender: median samples/s (wall and per CPU-second), and per-round ratios to each other contender."""
    out = {}
    for name, rs in reports.items():
        rates = [rate(r) for r in rs]
        out[name] = {
            "samples_per_s": median(rates),
            "samples_per_s_all": rates,
            "samples_per_cpu_s": median([r["samples"] / r["train_cpu_s"] for r in rs]),
            "cores_used": median([r["train_cpu_s"] / r["train_s"] for r in rs]),
            "others_cores": median([r.get("others_cores") for r in rs]),
            "epoch_s": median([r["epoch_s"] for r in rs]),
            "samples_per_s_full_epoch": median([r["samples"] / r["epoch_s"] for r in rs]),
            "loadavg": median([r["loadavg"] for r in rs]),
        }
    names = list(reports)
    for a in names:
        ratios = {}
        for b in names:
            if a == b:
                continue
            per_round = [rate(ra) / rate(rb) for ra, rb in zip(reports[a], reports[b])]
            ratios[b] = {"median": median(per_round), "all": per_round}
        out[a]["ratio_to"] = ratios
    return out


def ratio_to_best(reports, name, others):
    """Per round: `name`'s samples/s over the best of `others` in that round; median and all."""
    per_round = []
    for k, mine in enumerate(reports[name]):
        best = max(rate(reports[o][k]) for o in others if o in reports and k < len(reports[o]))
        per_round.append(rate(mine) / best)
    return {"median": median(per_round), "all": per_round, "others": list(others)}


def cpu_name():
    """The CPU's model name from /proc/cpuinfo, or "unknown"."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def commit():
    """The checkout's short commit hash, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    except OSError:
        return None
    return out.strip() or None
