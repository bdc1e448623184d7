"""The explorer page's latency: slider move to redrawn image, in a real headless Chromium on `kvae serve`.

    python -m benchmarks.explorer [--artifacts DIR ...] [--moves 300] [--out benchmarks/results_explorer.json]
                                  [--table /tmp/explorer_bench.md]

The server is `python -m kvae_serving serve DIR` as shipped (one worker per core, on a free port of
127.0.0.1); the browser is Debian's chromium (`make browser`) driven by Playwright. Every time comes
from the page itself: each view dispatches an `explorer:drawn` event with performance.now() from the
control's input event to the decoded image put on its canvas (the image a browser then shows at its
next frame; "to the next frame" adds that wait, requestAnimationFrame). Runs in the page, one after
another, each waiting for the previous image:

  slider        one slider moved to a new value (an `input` event, as a drag or an arrow key makes),
                `--moves` times after 30 warm-up moves: one Open Inference Protocol decoder request
  drag          a slider moved every 16 ms (60 Hz) for 2 s: how many images the page draws while the
                requests coalesce (the latest position wins), and their latency
  new seed      the "New seed" button: 16 prior samples from /v1/generate (JSON, with their codes)
  interpolation the path switched between linear and spherical: 10 codes decoded and drawn as a strip

Default artifacts: the load benchmark's cached latent-16 MLP (benchmarks/load_cache.py; trained and exported on
first use).
Goal: slider move to redrawn image <= 50 ms at the median on this project's 2-core machine.
Raw times go to --out (JSON), the table to --table (Markdown, for BENCHMARKS.md).
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile

from benchmarks import load_cache, load_servers
from kvae_contract import artifacts as contract

CHROMIUM = "/usr/bin/chromium"
HERE = os.path.dirname(os.path.abspath(__file__))
GOAL_MS = 50.0

# Each returns {"ms": [...], "frame_ms": [...]}: times the page reported, and to the frame after each.
SLIDER = """async ([n, warmup]) => {
  const slider = document.querySelector("#sliders input[type=range]");
  const lo = Number(slider.min), hi = Number(slider.max);
  const out = { ms: [], frame_ms: [] };
  for (let i = 0; i < n + warmup; i++) {
    const drawn = next("slider");
    slider.value = String(lo + ((i * 0.618034) % 1) * (hi - lo));  // a new value every time
    slider.dispatchEvent(new Event("input", { bubbles: true }));
    const detail = await drawn;
    const shown = await frame();
    if (i >= warmup) { out.ms.push(detail.ms); out.frame_ms.push(shown - detail.at + detail.ms); }
  }
  return out;
}"""
DRAG = """async ([seconds, everyMs]) => {
  const slider = document.querySelector("#sliders input[type=range]");
  const lo = Number(slider.min), hi = Number(slider.max);
  const seen = [];
  const on = (e) => e.detail.view === "slider" && seen.push(e.detail.ms);
  document.addEventListener("explorer:drawn", on);
  const inputs = Math.round((seconds * 1000) / everyMs);
  for (let i = 0; i < inputs; i++) {
    slider.value = String(lo + (0.5 + 0.4 * Math.sin(i / 10)) * (hi - lo));
    slider.dispatchEvent(new Event("input", { bubbles: true }));
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
  await new Promise((resolve) => setTimeout(resolve, 500));  // the last request's image
  document.removeEventListener("explorer:drawn", on);
  return { inputs, ms: seen };
}"""
BUTTON = """async ([n, view, selectors]) => {
  const out = { ms: [], frame_ms: [] };
  for (let i = 0; i < n; i++) {
    const drawn = next(view);
    document.querySelector(selectors[i % selectors.length]).click();  // the controls in turn
    const detail = await drawn;
    const shown = await frame();
    out.ms.push(detail.ms); out.frame_ms.push(shown - detail.at + detail.ms);
  }
  return out;
}"""
# Helpers the runs above use, installed in the page once (window.next, window.frame).
HELPERS = """() => {
  window.next = (view) => new Promise((resolve) => document.addEventListener("explorer:drawn", function on(e) {
    if (e.detail.view !== view) return;
    document.removeEventListener("explorer:drawn", on);
    resolve({ ...e.detail, at: performance.now() });
  }));
  window.frame = () => new Promise((resolve) => requestAnimationFrame(() => resolve(performance.now())));
}"""


def summary(ms):
    ordered = sorted(ms)
    at = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(ms), "median": statistics.median(ms), "p90": at(0.9), "p99": at(0.99),
            "mean": statistics.fmean(ms), "min": ordered[0], "max": ordered[-1]}


def measure(folder, moves, progress):
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="kvae-explorer-bench-") as logs:
        port = load_servers.free_port()
        command = [sys.executable, "-m", "kvae_serving", "serve", folder, "--port", str(port), "--quiet"]
        server = load_servers.Server("kvae", "kvae serve", command, port, logs)
        try:
            server.wait_ready()
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM)
                page = browser.new_page(viewport={"width": 1200, "height": 1400})
                problems = []
                page.on("pageerror", lambda e: problems.append(str(e)))
                page.goto(server.url + "/")
                page.wait_for_selector("#sliders input[type=range]", timeout=60_000)
                page.evaluate(HELPERS)
                page.wait_for_timeout(500)  # the first images, drawn as the page loads
                progress(f"  slider: {moves} moves")
                slider = page.evaluate(SLIDER, [moves, 30])
                progress("  drag: 2 s at 60 Hz")
                drag = page.evaluate(DRAG, [2, 16])
                progress("  new seed: 30 presses")
                seed = page.evaluate(BUTTON, [30, "samples", ["#new-seed"]])
                runs = {"slider": slider, "drag": drag, "new_seed": seed}
                if page.locator("#test-images button").count() >= 2:
                    progress("  interpolation: 30 path switches")
                    paths = ["input[name=path][value=spherical]", "input[name=path][value=linear]"]
                    runs["interpolation"] = page.evaluate(BUTTON, [30, "interpolation", paths])
                chromium = browser.version
                browser.close()
            if problems:
                raise RuntimeError(f"the page failed: {problems}")
        finally:
            server.stop()
    with open(os.path.join(folder, contract.MANIFEST)) as f:
        manifest = json.load(f)
    return {"artifacts": folder, "model": describe(manifest), "chromium": chromium, "runs": runs}


def describe(manifest):
    """"latent-40 MLP 300-300 (gated)": the model, from the manifest and its training config."""
    config = manifest.get("training_config") or {}
    text = f"latent-{manifest['latent_dim']} {str(config.get('architecture', '')).upper()}".strip()
    if config.get("architecture") == "mlp" and config.get("mlp_hidden_units"):
        text += " " + "-".join(map(str, config["mlp_hidden_units"])) + f" ({config.get('mlp_layer', 'dense')})"
    return text


def table(results):
    lines = ["| model | action | n | median ms | p90 ms | p99 ms | to next frame, median ms |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for result in results:
        model = result["model"]
        for name, run in result["runs"].items():
            s = summary(run["ms"])
            if name == "drag":
                label = f"drag, 60 Hz for 2 s: {s['n']} images for {run['inputs']} inputs"
                frame = "n/a"
            else:
                label = {"slider": "slider move -> redrawn image", "new_seed": "new seed -> 16 samples",
                         "interpolation": "path switch -> 10-image strip"}[name]
                frame = f"{statistics.median(run['frame_ms']):.1f}"
            lines.append(f"| {model} | {label} | {s['n']} | {s['median']:.1f} | {s['p90']:.1f} | {s['p99']:.1f} | "
                         f"{frame} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", action="append", help="artifacts folder(s) (default: the load cache's MLP)")
    parser.add_argument("--moves", type=int, default=300, help="measured slider moves per model")
    parser.add_argument("--out", default=os.path.join(HERE, "results_explorer.json"))
    parser.add_argument("--table", default="/tmp/explorer_bench.md")
    args = parser.parse_args(argv)
    if not os.path.exists(CHROMIUM):
        sys.exit(f"benchmarks.explorer: {CHROMIUM} is missing: run `make browser` (apt-get install chromium).")

    def progress(text):
        print(text, file=sys.stderr, flush=True)

    folders = args.artifacts or [load_cache.artifacts("mlp", progress)]
    results = []
    for folder in folders:
        progress(f"{folder}:")
        results.append(measure(os.path.abspath(folder), args.moves, progress))
    load_average = os.getloadavg()
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cores": len(os.sched_getaffinity(0)), "load_average": load_average,
                    "python": platform.python_version()},
        "goal_ms": GOAL_MS,
        "summaries": [{name: summary(run["ms"]) for name, run in r["runs"].items()} for r in results],
        "results": results,
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    slider = [summary(r["runs"]["slider"]["ms"])["median"] for r in results]
    text = (f"Explorer latency (python -m benchmarks.explorer; {report['machine']['cores']} cores, load average "
            f"{load_average[0]:.1f} during the run; headless Chromium {results[0]['chromium']}; times from "
            f"performance.now() in the page, control event to image on the canvas):\n\n{table(results)}\n\n"
            f"Goal: slider move -> redrawn image <= {GOAL_MS:g} ms at the median: "
            f"{'met' if max(slider) <= GOAL_MS else 'NOT met'} ({', '.join(f'{m:.1f} ms' for m in slider)}).\n")
    with open(args.table, "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
