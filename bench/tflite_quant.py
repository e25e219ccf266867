"""Quantized TFLite files against the float32 one: size, LiteRT speed, PSNR and max difference.

For a run directory (or, without one, a freshly initialised untrained `paper` generator,
resnet_9blocks ngf 64, with the built-in dataset generated at the bench size for its images),
one direction is converted as `cyclegan-tf export --format=tflite [--quantize=...]` converts it
(`exporting.convert_tflite`: float32, float16, dynamic, int8 calibrated on `CALIBRATION_IMAGES`
training images through `exporting.RunImages`) and each file is measured:

- file size;
- images/s of uint8 [1, size, size, 3] -> uint8 in LiteRT (`sources.open_file`: ai_edge_litert's
  Interpreter with XNNPACK and one thread per CPU this process may use), batch 1, the median of
  `--repeats` calls after one warm-up call; the formats take turns call by call, so drift of a
  shared machine spreads over all of them;
- PSNR (dB, float outputs, 0..255 scale) and max/mean uint8 difference against the float32 Keras
  generator on the run's test images (`exporting.check_quantized`, as the export's own check,
  without its floor), at the run's test size; without a run, the built-in test images at `--size`.

One JSON line per format (prefixed `RESULT `) and a Markdown table at the end; the CPU model,
its flags of interest and the load average before and after are printed with them (timings from
a loaded machine are not comparable).

    python bench/tflite_quant.py                              # untrained paper generator, 256 px
    python bench/tflite_quant.py --run_dir=runs/h2z --direction=a2b --repeats=20
    python bench/tflite_quant.py --ngf=8 --generator=resnet_6blocks --size=32 --repeats=3  # smoke
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FORMATS = ("float32", "float16", "dynamic", "int8")


def cpu_description() -> str:
    """The CPU model and which of AVX2 / AVX-512 / AVX512_BF16 / AMX it has (from /proc/cpuinfo)."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown CPU":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
    present = [flag for flag in wanted if flag in flags]
    return f"{model} ({os.cpu_count()} CPUs; {' '.join(present) or 'no AVX2'})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", help="a run directory; default: an untrained generator")
    parser.add_argument("--direction", default="a2b", choices=("a2b", "b2a"))
    parser.add_argument("--checkpoint", default=None, help="run directories: step or name")
    parser.add_argument("--generator", default="resnet_9blocks", help="without --run_dir")
    parser.add_argument("--ngf", type=int, default=64, help="without --run_dir")
    parser.add_argument("--size", type=int, default=256, help="images/s at size x size pixels")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per format")
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated subset")
    parser.add_argument("--output_dir", default=None, help="keep the files here (default: temp)")
    args = parser.parse_args(argv)
    formats = [name.strip() for name in args.formats.split(",") if name.strip()]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        parser.error(f"--formats takes {', '.join(FORMATS)}; got {args.formats!r}")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    from cyclegan_tf import config, exporting, generators, inference, sources

    load_before = os.getloadavg()
    work = args.output_dir or tempfile.mkdtemp(prefix="bench_tflite_quant_")
    os.makedirs(work, exist_ok=True)
    if args.run_dir:
        run = inference.load_run(args.run_dir, args.checkpoint, (args.direction,), "float32")
        generator, multiple, cfg = run.generators[args.direction], run.multiple, run.config
        images = exporting.RunImages(args.run_dir, cfg)
        model = f"{args.run_dir} ({args.direction}, {os.path.basename(run.checkpoint)})"
    else:
        keras.utils.set_random_seed(0)
        # The built-in dataset at the bench size gives the untrained generator calibration and
        # check images through the same pipeline as a run's.
        cfg = config.preset(
            "paper",
            generator=args.generator,
            ngf=args.ngf,
            precision="float32",
            load_size=args.size,
            crop_size=args.size,
            builtin_size=args.size,
            builtin_num_train=exporting.CALIBRATION_IMAGES,
            builtin_num_test=exporting.QUANTIZED_CHECK_IMAGES,
        )
        name = inference.GENERATOR_NAMES[args.direction]
        generator = generators.build_from_config(cfg.model, name, precision="float32")
        multiple = generators.size_multiple(cfg.model.generator)
        images = exporting.RunImages(work, cfg)  # `work` holds no run: nothing is read from it
        model = f"untrained {args.generator} ngf {args.ngf} (seed 0)"
    endpoints = inference.Endpoints(generator, multiple)
    file_model = exporting.file_model(generator, multiple)
    signature = exporting.file_signature()
    check_images, described = images.check(args.direction)
    calibration = images.calibration(args.direction) if "int8" in formats else None

    results, runners = {}, {}
    for fmt in formats:
        quantize = None if fmt == "float32" else fmt
        path = os.path.join(work, f"{fmt}.tflite")
        start = time.perf_counter()
        blob = exporting.convert_tflite(file_model, signature, quantize, calibration)
        with open(path, "wb") as f:
            f.write(blob)
        convert_s = time.perf_counter() - start
        figures = exporting.check_quantized(
            path, endpoints, check_images, fmt, described, floor=-math.inf
        )
        results[fmt] = {
            "format": fmt,
            "bytes": len(blob),
            "convert_s": round(convert_s, 1),
            "psnr_db": figures["psnr_db"],
            "max_uint8_difference": figures["max_uint8_difference"],
            "mean_uint8_difference": figures["mean_uint8_difference"],
            "check_images": figures["images"],
        }
        run_file = sources.open_file(path)
        runners[fmt] = run_file

    batch = np.random.default_rng(0).integers(0, 256, (1, args.size, args.size, 3), np.uint8)
    times = {fmt: [] for fmt in runners}
    for run_file in runners.values():
        run_file(batch)  # warm-up: delegate set-up, tensor allocation at this size
    for _ in range(args.repeats):
        for fmt, run_file in runners.items():  # in turns: the machine's drift hits all alike
            start = time.perf_counter()
            run_file(batch)
            times[fmt].append(time.perf_counter() - start)
    load_after = os.getloadavg()
    context = {
        "model": model,
        "size": args.size,
        "threads": sources._cpu_count(),
        "cpu": cpu_description(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "files": work,
    }
    float32_bytes = results.get("float32", {}).get("bytes")
    float32_rate = 1 / statistics.median(times["float32"]) if "float32" in times else None
    for fmt, result in results.items():
        rate = 1 / statistics.median(times[fmt])
        result["images_per_s"] = round(rate, 3)
        result["times_s"] = [round(t, 4) for t in times[fmt]]
        if float32_bytes:
            result["size_vs_float32"] = round(result["bytes"] / float32_bytes, 3)
        if float32_rate:
            result["speed_vs_float32"] = round(rate / float32_rate, 2)
        print("RESULT " + json.dumps({**result, **context}), flush=True)

    print(
        f"\n{model}, {args.size}x{args.size}, batch 1, {context['threads']} LiteRT threads, "
        f"median of {args.repeats}; {context['cpu']}; load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after"
    )
    print(f"check images: {described}\n")
    print(
        "| file | size | vs float32 | images/s | vs float32 | PSNR vs float Keras | max / mean "
        "uint8 difference |"
    )
    print("|---|---|---|---|---|---|---|")
    for fmt, r in results.items():
        psnr = "identical" if r["psnr_db"] is None else f"{r['psnr_db']:.1f} dB"
        print(
            f"| {fmt} | {r['bytes'] / 1e6:.2f} MB | {r.get('size_vs_float32', 1):.2f}x | "
            f"{r['images_per_s']:.2f} | {r.get('speed_vs_float32', 1):.2f}x | {psnr} | "
            f"{r['max_uint8_difference']} / {r['mean_uint8_difference']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
