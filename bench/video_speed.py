"""Video translation speed: frames/s of `translate` on a video against the same frames as PNG files.

    python bench/video_speed.py                          # 48 frames at 256 x 256, float32 and auto
    python bench/video_speed.py --frames=24 --size=128 --precision=float32

The paper's generator (resnet_9blocks, ngf 64, random weights: the speed does not depend on them)
in a run directory made here; a 256 x 256 H.264 video with an AAC track made with PyAV, and the
same frames decoded and saved as PNG files. Each precision translates both once to warm up (the
function traces), then `--repeats` times each, alternating; the median frames/s is printed
(process CPU time too). Needs the `[video]` extra.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import PIL.Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="float32,auto")
    args = parser.parse_args()

    import av
    import fixtures  # tests/fixtures.py: make_video

    from cyclegan_tf import checkpoints, config, hardware, rundir, sources, trainer

    work = tempfile.mkdtemp(prefix="video_speed_")
    run_dir = os.path.join(work, "run")
    cfg = config.preset("paper", precision="float32")
    model = trainer.CycleGAN(cfg, steps_per_epoch=1)
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, rundir.CONFIG_FILE), "w") as f:
        f.write(cfg.to_json())
    checkpoints.Checkpointer(model.checkpoint_objects(), run_dir).save(1)

    clip = os.path.join(work, "clip.mp4")
    fixtures.make_video(clip, args.size, args.size, frames=args.frames, rate=24)
    pngs = os.path.join(work, "frames")
    os.makedirs(pngs)
    with av.open(clip) as container:
        for i, frame in enumerate(container.decode(video=0)):
            PIL.Image.fromarray(frame.to_ndarray(format="rgb24")).save(
                os.path.join(pngs, f"{i:05d}.png")
            )
    print(hardware.describe())
    print(f"{args.frames} frames at {args.size}x{args.size}, resnet_9blocks ngf 64")

    for precision in args.precision.split(","):
        timings = {"video": [], "png": []}
        for repeat in range(args.repeats + 1):  # the first round warms up
            for kind, source in (("video", clip), ("png", pngs)):
                out = os.path.join(work, f"out_{precision}_{kind}")
                wall, cpu = time.perf_counter(), time.process_time()
                summary = sources.load(run_dir, precision=precision).translate_files(
                    source, out, verbose=False
                )
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                assert not summary.failed, summary.failed
                if repeat:
                    timings[kind].append((args.frames / wall, cpu / args.frames))
        resolved = summary.precision
        for kind, values in timings.items():
            fps = statistics.median(v[0] for v in values)
            cpu = statistics.median(v[1] for v in values)
            spread = ", ".join(f"{v[0]:.2f}" for v in values)
            print(
                f"{precision} ({resolved}) {kind:5s}: {fps:.2f} frames/s (runs: {spread}); "
                f"{cpu * 1000:.0f} ms CPU per frame"
            )
    print(f"(work files in {work})")


if __name__ == "__main__":
    main()
