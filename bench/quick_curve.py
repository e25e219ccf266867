"""Score-vs-steps curve of a built-in-dataset recipe from ONE training run.

    PYTHONPATH=. /work/venv/bin/python bench/quick_curve.py --out /tmp/curve_q \
        --every 100 [--score_every 100] [--precision float32] [--set ngf=16 --set batch_size=4 ...]

Trains `cyclegan-tf train --dataset=builtin --preset=quick` (plus the `--set` overrides) once
through `train.train`, keeping a full checkpoint every `--every` steps, then scores the generator
G_AB of each kept checkpoint on the paired test split with `synthetic.score_translation`, the
routine training's `score.json` uses, in the run's precision (with `--score_every`, only the
kept checkpoints at its multiples and the last one: e.g. `--every 10 --score_every 100` keeps a
dense sequence for bench/quick_ema.py's offline weight averaging). Prints one JSON line per
scored checkpoint (step, seconds since the start of `train.train` when the checkpoint was written,
the five scores) and writes them to `<out>/curve.jsonl`. Points before the end are mid-schedule
(the learning rate has not decayed yet), so they are a lower bound of what a recipe of that length
reaches.

For the other CPU kind's arithmetic (float32 Eigen kernels) run it with
`CYCLEGAN_TF_CPU_BF16=0 TF_ENABLE_ONEDNN_OPTS=0`.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import sys
import time


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv=None) -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import unet_refine  # beside this script; Keras only once a head is installed

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    unet_refine.add_flag(parser)
    parser.add_argument("--out", required=True, help="run directory (replaced)")
    parser.add_argument("--every", type=int, default=100, help="steps between kept checkpoints")
    parser.add_argument(
        "--score_every",
        type=int,
        default=None,
        help="score only kept checkpoints at multiples of this (and the last); default --every",
    )
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="field=value override")
    args = parser.parse_args(argv)
    if args.unet_refine:
        unet_refine.install(args.unet_refine)

    import tensorflow as tf

    from cyclegan_tf import checkpoints, data, generators, synthetic, training
    from cyclegan_tf import config as config_lib

    overrides = dict(item.split("=", 1) for item in args.set)
    overrides = {k: _value(v) for k, v in overrides.items()}
    config = config_lib.preset(
        args.preset,
        dataset="builtin",
        precision=args.precision,
        seed=args.seed,
        save_steps=args.every,
        keep_checkpoints=1000,
        **overrides,
    )
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    t0 = time.time()
    result = training.train(config, args.out, verbose=1)
    wall = time.time() - t0
    resolved = result.config
    builtin_dir = data.builtin_path(resolved.data, synthetic.DEFAULT_SEED)

    g_ab = generators.build_from_config(resolved.model, "g_ab", resolved.train.precision)
    translate = tf.function(lambda x: g_ab(x, training=False), autograph=False)
    ckpt_dir = checkpoints.checkpoint_dir(args.out)
    state = tf.train.get_checkpoint_state(ckpt_dir)
    rows = []
    paths = state.all_model_checkpoint_paths
    score_every = args.score_every or args.every
    for path in paths:
        if checkpoints.step_of(path) % score_every and path != paths[-1]:
            continue
        checkpoints.restore_generators(path, g_ab=g_ab)
        score = synthetic.score_translation(translate, builtin_dir)["g_ab"]
        seconds = os.path.getmtime(path + ".index") - t0
        row = {
            "step": checkpoints.step_of(path),
            "seconds": round(seconds, 1),
            **{k: round(v, 4) for k, v in score.items() if not k.startswith("identity/")},
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {
        "preset": args.preset,
        "overrides": overrides,
        "precision": resolved.train.precision,
        "seed": args.seed,
        "wall_seconds": round(wall, 1),
        "first_step_seconds": result.first_step_seconds,
        "steps_per_second": result.steps_per_second,
        "identity": {
            k.split("/", 1)[1]: round(v, 4)
            for k, v in result.score["g_ab"].items()
            if k.startswith("identity/")
        },
    }
    print(json.dumps(summary), flush=True)
    with open(os.path.join(args.out, "curve.jsonl"), "w") as f:
        for row in [summary, *rows]:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
