"""The live demo's speed and memory, measured in a real browser: time from clicking Generate to a
playable audio element for a 32-bar song (FluidSynth and neural renderer), the server's memory,
its start-up time, and the browser test's run time.

    .venv/bin/python -m bench.demo_latency [--preset tiny] [--seeds 0 1] [--browser_test]

Starts ``python -m src.demo`` as its own process on a free port of 127.0.0.1 and drives the page in
headless Chromium (``bash setup.sh --dev``): the first example (a 32-bar folk dance tune, a:8,a:8,b:8,b:8),
each seed, each renderer. Writes docs/results/demo_latency_cpu.json and a screenshot of the page.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine, table
from src.demo.browser import chromium, fill, wait_for
from src.utils.io import write_json


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory now (VmRSS) and at its peak (VmHWM) of a process, in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {k: round(int(fields[k].split()[0]) / 1024, 1) for k in ("VmRSS", "VmHWM")}


def start_server(preset: str, out_dir: Path) -> tuple[subprocess.Popen, str, float]:
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "src.demo", "--preset", preset, "--port", "0", "--out_dir", str(out_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"(http://\S+)", line)
    if not m:
        proc.kill()
        raise RuntimeError(f"the demo did not start: {line!r}")
    return proc, m.group(1).rstrip("/"), time.perf_counter() - t


def one_song(driver, seed: int, renderer: str) -> dict:
    driver.find_element("css selector", "#examples button").click()  # the first example: 32 bars
    driver.execute_script("document.getElementById('sampling').open = true")  # the seed is under Sampling
    fill(driver, "seed", str(seed))
    driver.find_element("id", f"renderer-{renderer}").click()
    n = driver.execute_script("return window.demoTimings.length")
    driver.find_element("id", "generate").click()
    wait_for(driver, f"return window.demoTimings.length > {n}", 900)
    timing = driver.execute_script("return window.demoTimings[window.demoTimings.length - 1]")
    meta = driver.execute_script("return fetch(document.getElementById('dl-json').href).then(r => r.json())")
    return {
        "renderer": renderer,
        "seed": seed,
        "bars": meta["facts"]["bars"],
        "music_s": meta["facts"]["duration_s"],
        "audio_s": meta["audio_seconds"],
        "audio_element_s": round(timing["duration"], 3),
        "click_to_audio_s": round(timing["clickToAudioMs"] / 1000, 2),
        "renderer_name": meta["renderer"],
        "planner": f"{meta['checkpoint']['kind']} {meta['checkpoint']['path']} step {meta['checkpoint']['step']}",
    }


def browser_test() -> dict:
    """Run the page's browser test (with its micro fixtures) and read pytest's durations."""
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-q", "tests/test_demo.py", "-k", "chromium", "--durations=0"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    call = re.search(r"([\d.]+)s call\s+tests/test_demo.py::test_page_in_headless_chromium", out)
    return {"wall_s": round(time.perf_counter() - t, 1), "test_call_s": float(call.group(1)) if call else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--browser_test", action="store_true", help="also time tests/test_demo.py's browser test")
    ap.add_argument("--out", default="docs/results/demo_latency_cpu.json")
    ap.add_argument("--screenshot", default="docs/results/demo_page.png")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        proc, url, startup = start_server(args.preset, Path(tmp) / "songs")
        driver = chromium(Path(tmp) / "profile", Path(tmp) / "downloads")
        try:
            idle = memory_mb(proc.pid)
            driver.get(url)
            wait_for(driver, "return document.body.dataset.ready === '1'", 60)
            runs = []
            for renderer in ("fluidsynth", "neural"):
                for seed in args.seeds:
                    runs.append(one_song(driver, seed, renderer) | {"server_mb": memory_mb(proc.pid)})
                    print(json.dumps(runs[-1]), flush=True)
            driver.save_screenshot(args.screenshot)
            after = memory_mb(proc.pid)
        finally:
            driver.quit()
            proc.terminate()
            proc.wait(30)
    result = {
        "machine": machine(),
        "preset": args.preset,
        "startup_s": round(startup, 1),
        "server_mb_idle": idle,
        "server_mb_after": after,
        "runs": runs,
    }
    if args.browser_test:
        result["browser_test"] = browser_test()
    write_json(args.out, result)
    rows = [r | {"server_rss_mb": r["server_mb"]["VmRSS"]} for r in runs]
    print(table(rows, ["renderer", "seed", "bars", "audio_s", "click_to_audio_s", "server_rss_mb"]))
    print(f"start-up {startup:.1f} s; memory idle {idle}, after {after}; browser test {result.get('browser_test')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
