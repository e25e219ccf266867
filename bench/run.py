"""The benchmark: CycleGAN training speed on this machine, side by side with the PyTorch yardstick.

    /work/venv/bin/python bench/run.py            # full: 128 and 256 px, ~15-20 minutes
    /work/venv/bin/python bench/run.py --quick    # 128 px only, one repeat, ~4 minutes
    /work/venv/bin/python bench/run.py --startup  # start-up vs dataset size only, ~2 minutes
    /work/venv/bin/python bench/run.py --process  # a 1-step train process vs PyTorch's, ~3 min

Prints a table and writes it into bench/RESULTS.md, in the block of this machine's kind (between
`<!-- bench:begin KIND -->` and `<!-- bench:end KIND -->`, KIND from the CPU's vector features:
`avx512_bf16`, `avx512`, `avx2`, ...; a new kind gets a new block, the others are kept, and so is
the hand-written log of experiments around them).

Precisions: every precision this machine computes natively (float32, plus mixed_bfloat16 where
the CPU has AVX512_BF16/AMX; emulated bfloat16 is 7-8x slower than float32 and only measured on
request with --precisions), and `auto` (what `cyclegan-tf train` picks here), which is reported
as the row of the precision it resolves to.

Every configuration runs in its own process (`bench/worker.py`), one at a time (the machine has
2 cores), the PyTorch yardstick interleaved with ours in each repeat; figures are medians over
repeats. Each run also records the CPU time that OTHER processes used while it ran ("foreign
load", in cores, from /proc/stat minus the run's own rusage): on a shared machine that is the
noise, and runs start only after the machine has been quiet for a second (or a wait limit).

Measured:
  s/iter       median seconds per training iteration after the first (resnet_9blocks, basic
               PatchGAN, batch 1, LSGAN, identity loss, pool 50, Adam: the paper step)
  MFU          executed FLOPs of the step (analytic, see worker.step_flops; cross-checked against
               TF's profiler count of the traced graph) / time / the conv peak measured here in
               TF for the same precision
  first step   wall time from process start (spawn) to the first finished step
  pipeline     the tf.data training stream alone (data.py: JPEG decode, resize 286 bicubic, random
               crop 256, flip), images/s; compared with what a training step consumes
  SavedModel   one generator exported and loaded back, 256x256 batch 1, images/s; compared with
               the yardstick's generator forward in PyTorch eager (no_grad)
  RSS          peak resident memory of the process

`--startup` measures only how opening a folder dataset scales with its size (`worker.py
startup`): folders of 1k, 10k and 100k 8x8 PNGs (generated once into /tmp and reused), each
opened twice against one run directory, as `train()` opens it (first start: no file_checks.json,
every file decoded; second start: the record reused), timed from `data.load` to the first batch.
It writes its own block (`startup-KIND`) in RESULTS.md's "Start-up vs dataset size" section.

`--process` times whole processes, spawn to exit: `cyclegan-tf train --max_steps=1` at 128 px
(the paper preset, `auto` precision, a folder of 16 JPEGs per domain, a new run directory each
time), split into phases by the time its output lines arrive (opened: imports, data, model,
run directory; the first step: trace, instantiation, the step; the epoch grid; the last
checkpoint; exit), interleaved with the PyTorch yardstick's process (spawn, one step, exit) and
with each framework's bare import. Its block is `process-KIND`.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "worker.py")
RESULTS = os.path.join(HERE, "RESULTS.md")
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import worker  # noqa: E402  (bench/worker.py: TORCH_ANCHOR)

from cyclegan_tf import hardware  # noqa: E402  (its CPU half imports no TensorFlow)


def machine_kind(cpu: hardware.CpuInfo) -> str:
    """The RESULTS.md block a CPU's figures go to: its best vector feature for this workload."""
    for flag in ("amx_bf16", "avx512_bf16", "avx512f", "avx2"):
        if flag in cpu.flags:
            return {"avx512f": "avx512"}.get(flag, flag)
    return cpu.machine or "unknown"


def markers(kind: str) -> tuple[str, str]:
    return f"<!-- bench:begin {kind} -->", f"<!-- bench:end {kind} -->"


def default_precisions(cpu: hardware.CpuInfo) -> list[str]:
    """float32, and mixed_bfloat16 where this CPU computes it natively (or
    CYCLEGAN_TF_CPU_BF16=1 says so)."""
    native, _ = hardware.cpu_bf16()
    return ["float32", "mixed_bfloat16"] if native else ["float32"]


# ------------------------------------------------------------------------------------------------
# Machine noise


def foreign_cores(seconds: float = 1.0) -> float:
    """Cores' worth of CPU used by everything else over `seconds` (this process sleeps)."""
    busy = worker.cpu_busy_seconds()
    time.sleep(seconds)
    return (worker.cpu_busy_seconds() - busy) / seconds


def wait_quiet(limit: float, threshold: float = 0.25) -> float:
    """Waits (up to `limit` s) until other processes use < `threshold` cores; returns the last
    measured load."""
    deadline = time.time() + limit
    load = foreign_cores()
    while load >= threshold and time.time() < deadline:
        load = foreign_cores(2.0)
    return load


# ------------------------------------------------------------------------------------------------
# Running one measurement


def _child_env(extra: dict | None = None) -> dict:
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", **(extra or {}))


def run(cmd: list[str], env_extra: dict | None = None, timeout: float = 900) -> dict:
    """Runs `cmd` as a child process; returns its output, wall time, peak RSS and foreign load."""
    env = _child_env(env_extra)
    with tempfile.TemporaryFile("w+") as out:
        busy0 = worker.cpu_busy_seconds()
        t0 = time.time()
        proc = subprocess.Popen(
            [part.replace("{t0}", repr(t0)) for part in cmd],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=os.path.dirname(HERE),
        )
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.time() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        done = _ended(status, usage, t0, busy0)
        out.seek(0)
        return {**done, "text": out.read()}


def _ended(status: int, usage, t0: float, busy0: float) -> dict:
    """What `run` and `run_lines` report of a child that has just ended (`os.wait4`'s status
    and rusage; the spawn time and `worker.cpu_busy_seconds()` then)."""
    wall = time.time() - t0
    own = usage.ru_utime + usage.ru_stime
    return {
        "ok": os.waitstatus_to_exitcode(status) == 0,
        "wall_s": wall,
        "cpu_s": own,
        "rss_mb": usage.ru_maxrss / 1024,
        "foreign_cores": max(0.0, (worker.cpu_busy_seconds() - busy0 - own) / wall),
    }


def tf_worker(sub: str, *args: str, env: dict | None = None) -> dict:
    done = run([sys.executable, WORKER, sub, *args], env)
    results = [line[7:] for line in done["text"].splitlines() if line.startswith("RESULT ")]
    if not done["ok"] or not results:
        tail = "\n".join(done["text"].strip().splitlines()[-15:])
        raise RuntimeError(f"worker {sub} {' '.join(args)} failed:\n{tail}")
    return {**done, **json.loads(results[-1]), "rss_mb": done["rss_mb"]}


_TORCH_LINE = re.compile(r"threads (\d+) .*first_step_s ([\d.]+) step_s ([\d.]+)")


def torch_step(size: int, steps: int) -> dict:
    """The PyTorch yardstick (run from shared/anchors, not copied). Its own output gives the
    first step and the mean of the next `steps`; the time from spawn to the end of its first step
    is the wall time minus the steps that followed it."""
    done = run([sys.executable, worker.TORCH_ANCHOR, "--size", str(size), "--steps", str(steps)])
    match = _TORCH_LINE.search(done["text"])
    if not done["ok"] or not match:
        raise RuntimeError(f"torch yardstick failed:\n{done['text'][-2000:]}")
    threads, first, step = int(match[1]), float(match[2]), float(match[3])
    return {
        **done,
        "threads": threads,
        "step_s": step,
        "first_call_s": first,
        "first_step_s": done["wall_s"] - steps * step,
    }


def torch_available() -> bool:
    if not os.path.exists(worker.TORCH_ANCHOR):
        return False
    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True)
    return probe.returncode == 0


# ------------------------------------------------------------------------------------------------
# The plan


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


GRAPPLER_ON = ["--grappler", json.dumps({"disable_meta_optimizer": False}, separators=(",", ":"))]


def variants(args, size: int) -> list[tuple[str, str, list[str]]]:
    """(label, precision, extra worker args) of the TF step runs at `size`: the package as
    `cyclegan-tf train` runs it (Grappler's meta optimizer off, `train.configure_tensorflow`),
    per precision, and at 128 px also with Grappler on (what that setting saves)."""
    short = {"float32": "fp32", "mixed_bfloat16": "bf16", "mixed_float16": "fp16"}

    def label(p):
        return short.get(p, p) + (" (= auto)" if p == args.auto else "")

    out = [(label(p), p, []) for p in args.precisions]
    if size == 128 and not args.no_variants:
        out += [(f"{short.get(p, p)}, Grappler on", p, GRAPPLER_ON) for p in args.precisions]
    return out


def measure(args) -> dict:
    wait = args.quiet_wait
    torch_ok = torch_available() and not args.no_torch
    data: dict = {"runs": [], "torch": torch_ok}

    def record(kind, key, measure_once):
        """Runs one measurement after waiting for quiet; repeats it (up to --retries times) when
        other processes used more than --max-load cores during it; keeps the quietest."""
        tries = []
        for _ in range(args.retries + 1):
            wait_quiet(wait)
            tries.append(measure_once())
            if tries[-1]["foreign_cores"] <= args.max_load:
                break
            log(f"  noisy: other processes used {tries[-1]['foreign_cores']:.2f} cores; again")
        result = min(tries, key=lambda r: r["foreign_cores"])
        data["runs"].append({"kind": kind, "key": key, "tries": len(tries), **result})
        return result

    log("conv peak")
    data["peak"] = record("peak", "", lambda: tf_worker("peak"))
    for size in args.sizes:
        log(f"FLOPs at {size} px (analytic + TF profiler)")
        flops = functools.partial(tf_worker, "flops", "--size", str(size))
        data[f"flops{size}"] = record("flops", size, flops)

    for repeat in range(args.repeats):
        for size in args.sizes:
            steps = args.steps if size <= 128 else max(2, args.steps - 2)
            if torch_ok:
                r = record("torch", (size, "float32"), functools.partial(torch_step, size, steps))
                log(
                    f"[{repeat + 1}/{args.repeats}] torch {size}px: {r['step_s']:.2f} s/iter, "
                    f"first step {r['first_step_s']:.1f} s, load {r['foreign_cores']:.2f}"
                )
            for label, precision, extra in variants(args, size):
                step_args = ["--size", str(size), "--precision", precision, "--steps", str(steps)]
                step = functools.partial(tf_worker, "step", *step_args, *extra, "--t0", "{t0}")
                r = record("tf", (size, label), step)
                log(
                    f"[{repeat + 1}/{args.repeats}] tf {size}px {label}: "
                    f"{r['step_s']:.2f} s/iter, first step {r['first_step_s']:.1f} s "
                    f"(import {r['import_s']:.1f} build {r['build_s']:.1f} trace "
                    f"{r['trace_s']:.1f} first call {r['first_call_s']:.1f}), "
                    f"load {r['foreign_cores']:.2f}"
                )

    for _ in range(args.extra_repeats):
        pipeline = functools.partial(tf_worker, "pipeline", "--batches", str(args.pipeline_batches))
        r = record("pipeline", "", pipeline)
        log(f"pipeline: {r['images_per_s']:.0f} images/s")
        for precision in args.precisions:
            saved = functools.partial(tf_worker, "savedmodel", "--precision", precision)
            r = record("savedmodel", precision, saved)
            log(f"SavedModel 256px {precision}: {r['images_per_s']:.2f} images/s")
        if torch_ok:
            r = record("torch_gen", "", functools.partial(tf_worker, "torch_gen"))
            log(f"torch generator forward 256px: {r['images_per_s']:.2f} images/s")
    return data


# ------------------------------------------------------------------------------------------------
# Report


def _runs(data, kind, key=None):
    return [r for r in data["runs"] if r["kind"] == kind and (key is None or r["key"] == key)]


def summarize(data, args) -> dict:
    peak = {k: data["peak"][k]["gflops"] for k in ("float32", "bfloat16")}
    rows = []
    for size in args.sizes:
        flops = data[f"flops{size}"]["executed"]
        torch_runs = _runs(data, "torch", (size, "float32"))
        t_step = median([r["step_s"] for r in torch_runs])
        t_first = median([r["first_step_s"] for r in torch_runs])
        if torch_runs:
            rows.append(
                {
                    "config": f"PyTorch {size}px fp32",
                    "step_s": t_step,
                    "mfu": flops / t_step / 1e9 / peak["float32"],
                    "first_step_s": t_first,
                    "rss_mb": median([r["rss_mb"] for r in torch_runs]),
                    "load": max(r["foreign_cores"] for r in torch_runs),
                    "n": len(torch_runs),
                }
            )
        for label, precision, _ in variants(args, size):
            runs = _runs(data, "tf", (size, label))
            step = median([r["step_s"] for r in runs])
            first = median([r["first_step_s"] for r in runs])
            row = {
                "config": f"TF {size}px {label}",
                "step_s": step,
                "mfu": flops
                / step
                / 1e9
                / peak["bfloat16" if "bfloat" in precision else "float32"],
                "first_step_s": first,
                "phases": {
                    k: median([r[k] for r in runs])
                    for k in ("import_s", "build_s", "trace_s", "first_call_s")
                },
                "rss_mb": median([r["rss_mb"] for r in runs]),
                "load": max(r["foreign_cores"] for r in runs),
                "n": len(runs),
            }
            if torch_runs:
                row["ratio"] = step / t_step
                row["first_ratio"] = first / t_first
            rows.append(row)
    summary = {"rows": rows, "peak": peak}
    for size in args.sizes:
        summary[f"flops{size}"] = data[f"flops{size}"]
    for kind, key in (
        ("pipeline", ""),
        ("savedmodel", "float32"),
        ("savedmodel", "mixed_bfloat16"),
        ("torch_gen", ""),
    ):
        runs = _runs(data, kind, key)
        if runs:
            summary[f"{kind}{key}"] = {
                "images_per_s": median([r["images_per_s"] for r in runs]),
                "rss_mb": median([r["rss_mb"] for r in runs]),
                "load": max(r["foreign_cores"] for r in runs),
                "n": len(runs),
                **({"export": runs[0]["export"]} if kind == "savedmodel" else {}),
            }
    return summary


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def render(summary, args, started: str, elapsed: float) -> str:
    import keras
    import tensorflow as tf

    cpu_info = hardware.cpu_info()
    auto = hardware.auto_precision(gpu_list=()).precision
    torch_version = "-"
    if any(r["config"].startswith("PyTorch") for r in summary["rows"]):
        probe = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.__version__)"],
            capture_output=True,
            text=True,
        )
        torch_version = probe.stdout.strip()
    lines = [
        f"Run {started} UTC, {elapsed / 60:.1f} min, command: `{' '.join(args.argv)}`",
        f"CPU: {cpu_info.model}, {os.cpu_count()} cores, vector features "
        f"{' '.join(cpu_info.vector_features) or 'unknown'} "
        f"(machine kind `{machine_kind(cpu_info)}`; `--precision=auto` resolves to {auto}); "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, PyTorch {torch_version}, "
        f"Python {platform.python_version()}. Load average at the end: "
        f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}.",
        "",
        f"Measured conv peak (TF, best of 4 shapes): fp32 {summary['peak']['float32']:.0f} "
        f"GFLOP/s, bf16 {summary['peak']['bfloat16']:.0f} GFLOP/s.",
    ]
    for size in args.sizes:
        f = summary[f"flops{size}"]
        lines.append(
            f"FLOPs of one step at {size} px: {f['executed'] / 1e9:.1f} GFLOP executed "
            f"(analytic, see worker.step_flops; {f['graph'] / 1e9:.1f} in the graph before "
            f"Grappler prunes unused gradients). Forward, analytic vs TF profiler: generator "
            f"{f['gen_forward'] / 1e9:.2f} vs {_fmt(f.get('profiler_gen_forward', 0) / 1e9, '.2f')}"
            f", discriminator {f['disc_forward'] / 1e9:.2f} vs "
            f"{_fmt(f.get('profiler_disc_forward', 0) / 1e9, '.2f')} GFLOP (the profiler adds bias "
            f"adds and counts transposed convs on their uncropped output)."
        )
    lines += [
        "",
        "| config | s/iter | iter/s | ours/PyTorch time | MFU | first step s | ours/PyTorch "
        "first step | phases: import / build / trace / first call s | peak RSS MB | runs | max "
        "foreign load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        phases = r.get("phases")
        phase_text = " / ".join(f"{v:.1f}" for v in phases.values()) if phases else "-"
        lines.append(
            f"| {r['config']} | {r['step_s']:.2f} | {1 / r['step_s']:.2f} | "
            f"{_fmt(r.get('ratio'), '.2f')} | {r['mfu']:.0%} | {r['first_step_s']:.1f} | "
            f"{_fmt(r.get('first_ratio'), '.2f')} | {phase_text} | {r['rss_mb']:.0f} | {r['n']} | "
            f"{r['load']:.2f} |"
        )
    lines.append("")
    pipe = summary.get("pipeline")
    if pipe:
        consumption = [
            (r["config"], 2 / r["step_s"]) for r in summary["rows"] if r["config"].startswith("TF")
        ]
        fastest = max(consumption, key=lambda c: c[1]) if consumption else None
        text = f"Input pipeline alone: {pipe['images_per_s']:.0f} images/s"
        if fastest:
            text += (
                f" = {pipe['images_per_s'] / fastest[1]:.0f}x what the fastest step consumes "
                f"({fastest[0]}: 2 images per iteration, {fastest[1]:.2f} images/s)"
            )
        lines.append(text + f"; peak RSS {pipe['rss_mb']:.0f} MB.")
    torch_gen = summary.get("torch_gen")
    for key, label in (
        ("float32", "fp32 (`export --precision=float32`)"),
        ("mixed_bfloat16", "bf16 (`export --precision=mixed_bfloat16`)"),
    ):
        saved = summary.get(f"savedmodel{key}")
        if not saved:
            continue
        text = (
            f"SavedModel inference at 256 px, batch 1, {label}: {saved['images_per_s']:.2f} "
            f"images/s ({saved['export']}; peak RSS {saved['rss_mb']:.0f} MB)"
        )
        if torch_gen:
            text += (
                f"; PyTorch eager generator forward {torch_gen['images_per_s']:.2f} images/s: "
                f"ratio {saved['images_per_s'] / torch_gen['images_per_s']:.2f}x"
            )
        lines.append(text + ".")
    return "\n".join(lines) + "\n"


def write_results(block: str, kind: str, title: str | None = None) -> None:
    """Replaces the block of machine kind `kind` in RESULTS.md, or appends one for a new kind
    (under `title`, default "Machine kind `kind`")."""
    begin, end = markers(kind)
    text = open(RESULTS).read() if os.path.exists(RESULTS) else "# Benchmark results\n"
    if begin not in text:
        text += f"\n## {title or f'Machine kind `{kind}`'}\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1] if end in rest else ""
    with open(RESULTS, "w") as f:
        f.write(f"{head}{begin}\n{block}{end}{tail}")


# ------------------------------------------------------------------------------------------------
# Start-up against the dataset's size (--startup)


def measure_startup(args) -> list[dict]:
    """A first and a second start per folder size, each in a fresh process after quiet."""
    runs = []
    for images in args.startup_sizes:
        run_dir = tempfile.mkdtemp(prefix="bench_startup_run_")
        try:
            for _ in ("first", "second"):
                wait_quiet(args.quiet_wait)
                r = tf_worker("startup", "--images", str(images), "--run_dir", run_dir)
                log(
                    f"{images} images, {r['start']} start: {r['total_s']:.2f} s to the first "
                    f"batch (load {r['load_s']:.2f}, {r['decoded']} decoded), load "
                    f"{r['foreign_cores']:.2f}"
                )
                runs.append(r)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
    return runs


def render_startup(runs: list[dict], args, started: str) -> str:
    import tensorflow as tf

    cpu = hardware.cpu_info()
    bf16 = "with" if "avx512_bf16" in cpu.flags else "without"
    lines = [
        f"Run {started} UTC, command: `{' '.join(args.argv)}`",
        f"CPU: {cpu.model} (`grep -m1 'model name' /proc/cpuinfo`), {os.cpu_count()} cores, "
        f"flags {bf16} avx512_bf16; TensorFlow {tf.__version__}, Python "
        f"{platform.python_version()}. Load average at the end: "
        f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}.",
        "",
        "| images (8x8 PNG, half per domain) | start | files decoded | data.load s | "
        "file_checks.json written s | first batch s | data.load to first batch s | record MB | "
        "foreign load (cores) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['images']:,} | {r['start']} | {r['decoded']:,} | {r['load_s']:.2f} | "
            f"{r['save_s']:.2f} | {r['first_batch_s']:.2f} | {r['total_s']:.2f} | "
            f"{r['record_mb']:.1f} | {r['foreign_cores']:.2f} |"
        )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# A whole 1-step training process against PyTorch's (--process)

# What our process prints, in order, and the phase each line ends.
_PROCESS_MARKS = (
    ("Starting at step", "open"),  # imports, data, model build, run directory
    ("First step finished", "first step"),  # trace, instantiation, the step
    ("Wrote ", "grid"),  # the epoch grid (both cycles, inference)
    ("metric ", "score"),  # the built-in dataset's score (only with --dataset=builtin)
    ("Done at step", "checkpoint"),  # the last checkpoint written
)


def run_lines(cmd: list[str]) -> dict:
    """`run`, plus the second (from spawn) at which each line of the output arrived."""
    env = _child_env()
    busy0 = worker.cpu_busy_seconds()
    t0 = time.time()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        cwd=os.path.dirname(HERE),
    )  # fmt: skip
    lines = [(time.time() - t0, line.rstrip("\n")) for line in proc.stdout]
    _, status, usage = os.wait4(proc.pid, 0)
    done = _ended(status, usage, t0, busy0)
    return {**done, "lines": lines, "text": "\n".join(text for _, text in lines)}


def process_phases(lines: list[tuple[float, str]], wall: float) -> dict[str, float]:
    """Seconds from spawn at which each phase of `_PROCESS_MARKS` ended, and the exit."""
    ends = {}
    for seconds, text in lines:
        for start, phase in _PROCESS_MARKS:
            if phase not in ends and text.lstrip().startswith(start):
                ends[phase] = seconds
    ends["exit"] = wall
    return ends


def measure_process(args) -> dict:
    """`cyclegan-tf train --max_steps=1` at `--process-size` px on a folder of JPEGs, spawn to
    exit, interleaved with the PyTorch yardstick's process (spawn, its first step, exit: its wall
    time minus the one further step it times) and with the bare imports of both frameworks."""
    size = args.process_size
    folder = os.path.join(tempfile.gettempdir(), "cyclegan_bench_process_jpeg")
    tf_worker("jpegs", "--folder", folder, "--images", "16", "--size", str(size))
    runs: dict[str, list[dict]] = {"ours": [], "torch": [], "import tf": [], "import torch": []}
    work = tempfile.mkdtemp(prefix="bench_process_")
    py = sys.executable
    torch_ok = torch_available() and not args.no_torch
    try:
        for repeat in range(args.repeats):
            out = os.path.join(work, f"run_{repeat}")
            wait_quiet(args.quiet_wait)
            ours = run_lines([
                py, "-m", "cyclegan_tf.cli", "train", f"--dataset={folder}", f"--output_dir={out}",
                f"--load_size={size}", f"--crop_size={size}", "--max_steps=1",
            ])  # fmt: skip
            if not ours["ok"]:
                raise RuntimeError(f"train failed:\n{ours['text'][-2000:]}")
            ours["phases"] = process_phases(ours["lines"], ours["wall_s"])
            del ours["lines"], ours["text"]
            runs["ours"].append(ours)
            if torch_ok:
                wait_quiet(args.quiet_wait)
                t = torch_step(size, 1)
                runs["torch"].append({**t, "process_s": t["wall_s"] - t["step_s"]})
                wait_quiet(args.quiet_wait)
                runs["import torch"].append(run([py, "-c", "import torch"]))
            wait_quiet(args.quiet_wait)
            runs["import tf"].append(run([py, "-c", "import tensorflow, keras"]))
            phases = ours["phases"]
            log(
                f"repeat {repeat + 1}: ours {ours['wall_s']:.1f} s ("
                + ", ".join(f"{k} {v:.1f}" for k, v in phases.items())
                + f"; load {ours['foreign_cores']:.2f})"
                + (f", PyTorch {runs['torch'][-1]['process_s']:.1f} s" if runs["torch"] else "")
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return runs


def render_process(runs: dict, args, started: str) -> str:
    import tensorflow as tf

    cpu = hardware.cpu_info()
    ours = runs["ours"]
    walls = [r["wall_s"] for r in ours]
    lines = [
        f"Run {started} UTC, command: `{' '.join(args.argv)}`",
        f"{cpu.describe()}, {os.cpu_count()} cores; TensorFlow {tf.__version__}, Python "
        f"{platform.python_version()}; `auto` -> {hardware.auto_precision(gpu_list=()).precision}"
        f". Medians of {len(ours)} interleaved repeats (min-max).",
        "",
        "| process | spawn to exit s | of which |",
        "|---|---|---|",
    ]
    phases = [p for _, p in _PROCESS_MARKS] + ["exit"]
    ends = {p: median([r["phases"].get(p) for r in ours]) for p in phases}
    parts, last = [], 0.0
    for p in phases:
        if ends[p] is not None:
            parts.append(f"{p} {ends[p] - last:.1f}")
            last = ends[p]
    lines.append(
        f"| `cyclegan-tf train --max_steps=1` at {args.process_size} px | {median(walls):.1f} "
        f"({min(walls):.1f}-{max(walls):.1f}) | {', '.join(parts)} |"
    )
    if runs["torch"]:
        t = [r["process_s"] for r in runs["torch"]]
        first = median([r["first_call_s"] for r in runs["torch"]])
        lines.append(
            f"| PyTorch yardstick, 1 step at {args.process_size} px | {median(t):.1f} "
            f"({min(t):.1f}-{max(t):.1f}) | the step {first:.1f} |"
        )
    for name, code in (("import tf", "import tensorflow, keras"), ("import torch", "import torch")):
        if runs[name]:
            w = [r["wall_s"] for r in runs[name]]
            lines.append(
                f'| `python -c "{code}"` | {median(w):.1f} ({min(w):.1f}-{max(w):.1f}) | |'
            )
    if runs["torch"]:
        ratio = median(walls) / median([r["process_s"] for r in runs["torch"]])
        lines += ["", f"Ours / PyTorch, spawn to exit: {ratio:.2f}x."]
    loads = [r["foreign_cores"] for r in ours]
    lines.append(f"Other processes' load during our runs: {max(loads):.2f} cores at most.")
    return "\n".join(lines) + "\n"


def _report(args, runs, block: str, name: str, title: str) -> None:
    """A single-purpose mode's ending: prints its block, saves the raw runs (--json) and writes
    the block `<name>-KIND` of RESULTS.md under "<title> (`KIND`)" (unless --no-write)."""
    print("\n" + block)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1, default=str)
    if not args.no_write:
        kind = machine_kind(hardware.cpu_info())
        write_results(block, f"{name}-{kind}", f"{title} (`{kind}`)")
        log(f"wrote {os.path.relpath(RESULTS)}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128 px, one repeat, fewer steps")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of every step config")
    parser.add_argument("--sizes", default="128,256")
    parser.add_argument(
        "--precisions",
        default="",
        help="comma-separated; default: the precisions this CPU computes natively (plus auto)",
    )
    parser.add_argument("--steps", type=int, default=5, help="timed steps after the first")
    parser.add_argument("--extra-repeats", type=int, default=2, help="pipeline/SavedModel runs")
    parser.add_argument("--pipeline-batches", type=int, default=300)
    parser.add_argument("--quiet-wait", type=float, default=30.0, help="max s to wait for quiet")
    parser.add_argument(
        "--max-load", type=float, default=0.3, help="repeat a run when others used more cores"
    )
    parser.add_argument("--retries", type=int, default=2, help="repeats of a noisy run")
    parser.add_argument(
        "--no-variants", action="store_true", help="skip the Grappler-on runs at 128 px"
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch yardstick")
    parser.add_argument("--no-write", action="store_true", help="print only; keep RESULTS.md")
    parser.add_argument("--json", default="", help="also save the raw runs here")
    parser.add_argument(
        "--startup", action="store_true", help="only start-up vs dataset size (worker startup)"
    )
    parser.add_argument("--startup-sizes", default="1000,10000,100000", help="images per folder")
    parser.add_argument(
        "--process", action="store_true", help="only a 1-step train process vs PyTorch's"
    )
    parser.add_argument("--process-size", type=int, default=128)
    args = parser.parse_args(argv)
    args.argv = ["bench/run.py", *(sys.argv[1:] if argv is None else argv)]
    if args.startup:
        args.startup_sizes = [int(n) for n in args.startup_sizes.split(",")]
        started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
        runs = measure_startup(args)
        _report(
            args, runs, render_startup(runs, args, started), "startup", "Start-up vs dataset size"
        )
        return
    if args.process:
        started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
        runs = measure_process(args)
        _report(
            args, runs, render_process(runs, args, started), "process", "A 1-step training process"
        )
        return
    if args.quick:
        args.sizes, args.repeats, args.steps, args.extra_repeats = "128", 1, 3, 1
        args.pipeline_batches = 150
    args.sizes = [int(s) for s in args.sizes.split(",")]
    cpu = hardware.cpu_info()
    args.precisions = args.precisions.split(",") if args.precisions else default_precisions(cpu)
    auto = hardware.auto_precision(gpu_list=()).precision
    if auto not in args.precisions:
        args.precisions.append(auto)
    args.auto = auto
    log(f"CPU {cpu.describe()}: precisions {', '.join(args.precisions)} (auto -> {auto})")

    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    t0 = time.time()
    data = measure(args)
    summary = summarize(data, args)
    block = render(summary, args, started, time.time() - t0)
    print("\n" + block)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "data": data}, f, indent=1, default=str)
    if not args.no_write:
        write_results(block, machine_kind(hardware.cpu_info()))
        log(f"wrote {os.path.relpath(RESULTS)}")


if __name__ == "__main__":
    main()
