"""The load benchmark's results: medians over rounds, per-round ratios, the goals, the printed report."""

import operator

from benchmarks import harness
from benchmarks.load_requests import cases_of

GOAL_CASE = "json/b1/c8"
COMPARE = {">=": operator.ge, "<=": operator.le, "==": operator.eq}


def summary(runs):
    """Medians over rounds of requests/s, p50 and p99; errors summed; None if no run completed."""
    ok = [r for r in runs or [] if "failed" not in r]
    if not ok:
        return None
    out = {key: harness.median([r[key] for r in ok]) for key in ("req_per_s", "p50_ms", "p99_ms")}
    out["errors"] = sum(r["errors"] for r in ok)
    if "client_cores" in ok[0]:
        out["client_cores"] = harness.median([r["client_cores"] for r in ok])
    return out


def ratio(runs_a, runs_b):
    """Median over rounds of a's requests/s over b's in the same round; None when either is missing."""
    b = {r["round"]: r["req_per_s"] for r in runs_b or [] if "failed" not in r and r["req_per_s"] > 0}
    per_round = [r["req_per_s"] / b[r["round"]] for r in runs_a or [] if "failed" not in r and r["round"] in b]
    return {"median": harness.median(per_round), "all": per_round} if per_round else None


def ratios(http):
    """Within the run: kvae over KServe, over bare and over one worker, per case; binary over JSON at batch 64."""
    out = {}
    for arch, part in http.items():
        runs = part["runs"]
        kvae = runs.get("kvae", {})
        by_case = {}
        for case in kvae:
            by_case[case] = {f"kvae/{other}": ratio(kvae[case], runs[other].get(case))
                             for other in ("kserve", "bare", "kvae_1w") if other in runs}
        binary = {}
        for name, cases in runs.items():
            for case in cases:
                if case.startswith("binary/b64/"):
                    json_case = cases.get(case.replace("binary", "json"))
                    binary[f"{name}/{case.split('/')[-1]}"] = ratio(cases[case], json_case)
        out[arch] = {"per_case": by_case, "binary_over_json_b64": binary}
    return out


def goals(http, rat):
    """The issue's goals on the MLP, batch-1 JSON at 8 connections (binary/JSON: batch 64, 8 connections)."""
    def median_of(r):
        return r["median"] if r else None

    mlp = http.get("mlp", {}).get("runs", {})
    kvae = summary(mlp.get("kvae", {}).get(GOAL_CASE))
    per_case = rat.get("mlp", {}).get("per_case", {}).get(GOAL_CASE, {})
    checks = [
        ("kvae / KServe requests/s, batch-1 JSON, 8 connections", median_of(per_case.get("kvae/kserve")), ">=", 10.0),
        ("kvae / bare handler requests/s, batch-1 JSON, 8 connections", median_of(per_case.get("kvae/bare")), ">=",
         1.0),
        ("kvae p99 (ms), batch-1 JSON, 8 connections", kvae and kvae["p99_ms"], "<=", 2.0),
        ("kvae errors, batch-1 JSON, 8 connections", kvae and kvae["errors"], "==", 0),
        ("kvae binary / JSON requests/s, batch 64, 8 connections",
         median_of(rat.get("mlp", {}).get("binary_over_json_b64", {}).get("kvae/c8")), ">=", 1.5),
    ]
    out = []
    for text, value, op, target in checks:
        status = "not measured" if value is None else "met" if COMPARE[op](value, target) else "missed"
        out.append({"goal": f"{text} {op} {target:g}", "value": value, "status": status})
    return out


# Report.


def ms(value):
    return "-" if value is None else f"{value:.2f}"


def cell(s):
    if s is None:
        return "n/a"
    text = f"{s['req_per_s']:,.0f} ({ms(s['p50_ms'])}/{ms(s['p99_ms'])})"
    return text + (f" E{s['errors']}" if s["errors"] else "")


def times(r):
    return f"{r['median']:.2f}x" if r and r["median"] is not None else "-"


def render(results):
    """The printed report: HTTP table, ratios, gRPC, goals, what was not measured."""
    lines = []
    s = results["settings"]
    load = harness.median([r["loadavg"] for part in results["http"].values() for cases in part["runs"].values()
                           for runs in cases.values() for r in runs])
    lines.append(f"HTTP: requests/s (p50/p99 ms), medians of {s['rounds']} round(s) of {s['duration']} s, wrk -t1; "
                 f"En: n errors (socket errors + non-2xx). Load average during the runs: {load or 0:.1f} "
                 f"on {results['machine']['cores']} cores.")
    for arch, part in results["http"].items():
        names = list(part["servers"])
        rows = [[f"{arch:<5} case", *(part["servers"][n]["label"] for n in names), "kvae/KServe", "kvae/bare",
                 "kvae 2w/1w"]]
        cases = [c for *_, c in cases_of(s["connections"][arch])]
        for case in cases:
            per = results["ratios"][arch]["per_case"].get(case, {})
            rows.append([f"      {case}"] + [cell(summary(part["runs"].get(n, {}).get(case))) for n in names]
                        + [times(per.get("kvae/kserve")), times(per.get("kvae/bare")), times(per.get("kvae/kvae_1w"))])
        lines.append("")
        lines.extend(_table(rows))
        binary = results["ratios"][arch]["binary_over_json_b64"]
        if binary:
            lines.append("  binary / JSON at batch 64: " + ", ".join(f"{k} {times(v)}" for k, v in binary.items()))
    g = results["grpc"]
    lines.append("")
    if "skipped" in g:
        lines.append(f"gRPC: not measured: {g['skipped']}")
    else:
        lines.append(f"gRPC (kvae serve --grpc-port, mlp): tritonclient.grpc from {g['threads']} threads of one Python "
                     f"process, raw contents")
        rows = [["case", "req/s", "p50 ms", "p99 ms", "errors", "client cores"]]
        for case, runs in g["runs"].items():
            t = summary(runs)
            rows.append([case, f"{t['req_per_s']:,.0f}", ms(t["p50_ms"]), ms(t["p99_ms"]), str(t["errors"]),
                         f"{t['client_cores']:.2f}"])
        lines.extend(_table(rows))
        busy = max(summary(runs)["client_cores"] for runs in g["runs"].values())
        lines.append(f"  the client used up to {busy:.2f} cores of {results['machine']['cores']}: "
                     + ("it (one GIL), not the server, is likely the bottleneck" if busy > 0.8 else
                        "below one core, so the client was not the bottleneck"))
    lines.append("")
    lines.append("Goals:")
    for goal in results["goals"]:
        v = goal["value"]
        value = "-" if v is None else str(v) if isinstance(v, int) else f"{v:.2f}"
        lines.append(f"  [{goal['status']}] {goal['goal']}: {value}")
    notes = _not_measured(results)
    if notes:
        lines.append("")
        lines.append("Not measured:")
        lines.extend(f"  {n}" for n in notes)
    return "\n".join(lines)


def _not_measured(results):
    notes = [f"KServe: {results['kserve']['skipped']}"] if results["kserve"].get("skipped") else []
    for arch, part in results["http"].items():
        for name, server in part["servers"].items():
            if server["failed"]:
                notes.append(f"{arch} {name}: did not start: {server['failed'].splitlines()[0]}")
            for case, why in server["unsupported"].items():
                notes.append(f"{arch} {name} {case}: {why}")
    if "skipped" in results["grpc"]:
        notes.append(f"gRPC: {results['grpc']['skipped'].splitlines()[0]}")
    return notes


def _table(rows):
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
