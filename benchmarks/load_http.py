"""The HTTP measurement: wrk, one `wrk -t1` run per case and server, the servers loaded in alternation."""

import os
import re
import shutil
import subprocess
import sys

from benchmarks.load_report import ms
from benchmarks.load_requests import BODIES, INFER, cases_of, latent_rows, probe, reference_x_mean, request_bodies
from benchmarks.load_servers import http_servers, start_servers, stop_servers

WRK_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def find_wrk():
    """wrk's path; exits non-zero, naming the install command, when it is missing (the Makefile installs it)."""
    path = shutil.which("wrk")
    if path is None:
        sys.exit("benchmarks.load: wrk (the HTTP load generator) is not installed. "
                 "Install it with `apt-get install wrk` and run again.")
    return path


def wrk_script(folder, kind, batch, body, headers):
    """A wrk Lua script that POSTs this body (read from a file: binary bytes need no escaping)."""
    body_path = os.path.join(folder, f"{kind}-{batch}.body")
    with open(body_path, "wb") as f:
        f.write(body)
    lines = ['wrk.method = "POST"', f'local f = assert(io.open("{body_path}", "rb"))', 'wrk.body = f:read("*a")',
             "f:close()", *(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())]
    path = os.path.join(folder, f"{kind}-{batch}.lua")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def run_wrk(wrk, url, script, connections, duration):
    """One wrk run (one thread, `connections` connections, `duration` whole seconds); its parsed report."""
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s", "-s", script, url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        return {"failed": f"wrk exited with status {out.returncode}: {out.stderr.strip()[-300:]}"}
    try:
        return parse_wrk(out.stdout)
    except (AttributeError, ValueError) as e:
        return {"failed": f"unreadable wrk report ({e}): {out.stdout[-300:]}"}


def parse_wrk(text):
    """requests/s, p50 and p99 (ms), requests, socket errors and non-2xx responses from `wrk --latency`'s report."""
    def to_ms(value, unit):
        return float(value) * WRK_UNITS_MS[unit]

    def percentile(p):
        return to_ms(*re.search(rf"^\s*{p}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M).groups())

    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", text)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    counts = map(int, sockets.groups()) if sockets else (0,) * 4
    socket_errors = dict(zip(("connect", "read", "write", "timeout"), counts))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    non_2xx = int(non_2xx.group(1)) if non_2xx else 0
    requests = int(done.group(1))
    return {
        "req_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        "p50_ms": percentile(50) if requests else None, "p99_ms": percentile(99) if requests else None,
        "requests": requests, "seconds": to_ms(done.group(2), done.group(3)) / 1e3,
        "socket_errors": socket_errors, "non_2xx": non_2xx, "errors": sum(socket_errors.values()) + non_2xx,
    }


def alternate(servers, cases, scripts, settings, wrk, progress):
    """Every round, every case on every server in turn (order rotated each round); {server: {case: [runs]}}."""
    names = list(servers)
    runs = {name: {} for name in names}
    for k in range(settings["rounds"]):
        order = names[k % len(names):] + names[:k % len(names)]
        for kind, batch, connections, case in cases:
            shown = []
            for name in order:
                server = servers[name]
                if (kind, batch) in server.unsupported:
                    continue
                r = run_wrk(wrk, server.url + INFER, scripts[kind, batch], connections, settings["duration"])
                r.update(round=k, loadavg=os.getloadavg()[0])
                runs[name].setdefault(case, []).append(r)
                shown.append(f"{name} {r['failed']}" if "failed" in r else
                             f"{name} {r['req_per_s']:,.0f}/s p99 {ms(r['p99_ms'])} ms" +
                             (f" ({r['errors']} errors)" if r["errors"] else ""))
            progress(f"  round {k + 1}/{settings['rounds']} {case}: {', '.join(shown)} (load {os.getloadavg()[0]:.1f})")
    return runs


def measure_http(arch, folder, settings, kserve, cores, wrk, tmp, progress):
    """One model's HTTP servers: started together, probed, warmed up, loaded in alternation, stopped."""
    z = latent_rows()
    expected = reference_x_mean(folder, z)
    bodies = request_bodies(z)
    scripts = {key: wrk_script(tmp, *key, *bodies[key]) for key in bodies}
    specs = http_servers(arch, folder, kserve, cores)
    progress(f"HTTP, {arch}: starting {', '.join(specs)}")
    servers, failed = start_servers(specs, tmp, progress)
    try:
        for server in servers.values():
            for kind, batch in BODIES:
                why = probe(server, kind, *bodies[kind, batch], expected[:batch])
                if why:
                    server.unsupported[kind, batch] = why
                    progress(f"  {server.name}: {kind} batch {batch} not measured: {why}")
            run_wrk(wrk, server.url + INFER, scripts["json", 1], 8, settings["warmup"])  # warm-up, not kept
        runs = alternate(servers, cases_of(settings["connections"][arch]), scripts, settings, wrk, progress)
    finally:
        stop_servers(servers)
    return {
        "servers": {name: {"label": specs[name][0], "failed": failed.get(name),
                           "command": servers[name].cmd if name in servers else None,
                           "unsupported": {f"{k}/b{b}": why for (k, b), why in
                                           (servers[name].unsupported.items() if name in servers else [])}}
                    for name in specs},
        "runs": runs,
    }
