"""Offline generator weight averaging (EMA / Polyak) over a run's dense checkpoints, scored.

    PYTHONPATH=. /work/venv/bin/python bench/quick_curve.py --out /tmp/run --every 10 \
        --score_every 100 [--precision float32] [--seed 1]
    PYTHONPATH=. /work/venv/bin/python bench/quick_ema.py --run /tmp/run \
        [--decay 0.99 --decay 0.995 --decay 0.998] [--start 0 --start 400] [--at 600 --at 800]

Walks the run's kept checkpoints in step order (written by bench/quick_curve.py with a small
`--every`), and keeps, for each per-step decay d and start step s, an exponential moving average
of both generators' weights: at the first checkpoint with step >= s the average is that
checkpoint's weights; then for each later checkpoint k, avg = a * avg + (1 - a) * w_k with
a = d ** (step_k - step_{k-1}) (the per-step EMA subsampled at the checkpoint interval). With
`--debias` each variant also gets a bias-corrected twin (Adam's correction: the EMA started from
zero, divided by 1 - a^n, so the first checkpoint does not keep a^n of the total weight).
At each `--at` step the average is loaded into a generator built from the run's config, in the
run's precision, and G_AB is scored on the built-in paired test split with
`synthetic.score_translation` (what `score.json` and bench/quick_curve.py use); the raw
checkpoint at that step is scored beside it. Each row also has two columns that are not
score.json keys: `roughness`, the mean absolute 4-neighbour Laplacian / 4 of the G_AB outputs on
the test split (printed once for the true B images; a crude measure of the speckle the grids
show), and `contrast_ratio`, the band contrast inside the shapes over the truth's (stripe_error is
its distance from 1; this keeps the sign). At the last `--at` step a grid like the run's
images/epoch_*.png (same two test images per domain, `visualize.save_grid`) is written for each
variant and for the raw checkpoint to `<run>/ema/`. Rows go to stdout and `<run>/ema/ema.jsonl`.
Instance norm has no running statistics, so averaging the weights is the whole of it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv=None) -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import unet_refine  # beside this script; Keras only once a head is installed

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    unet_refine.add_flag(parser)
    parser.add_argument("--run", required=True, help="run directory of bench/quick_curve.py")
    parser.add_argument("--decay", type=float, action="append", help="per-step decay")
    parser.add_argument("--start", type=int, action="append", help="step the average starts at")
    parser.add_argument("--at", type=int, action="append", help="steps to score (default: last)")
    parser.add_argument("--debias", action="store_true", help="also bias-corrected averages")
    parser.add_argument("--no_grid", action="store_true")
    args = parser.parse_args(argv)
    if args.unet_refine:
        unet_refine.install(args.unet_refine)
    decays = args.decay or [0.99, 0.995, 0.998]
    starts = args.start or [0]

    import numpy as np
    import tensorflow as tf

    from cyclegan_tf import checkpoints, data, generators, rundir, synthetic, training, visualize

    config = rundir.require_config(args.run)
    precision = config.train.precision
    builtin_dir = data.builtin_path(config.data, synthetic.DEFAULT_SEED)
    state = tf.train.get_checkpoint_state(checkpoints.checkpoint_dir(args.run))
    paths = sorted(state.all_model_checkpoint_paths, key=checkpoints.step_of)
    steps = [checkpoints.step_of(p) for p in paths]
    at = sorted(args.at or [steps[-1]])
    out_dir = os.path.join(args.run, "ema")
    os.makedirs(out_dir, exist_ok=True)

    nets = {
        name: generators.build_from_config(config.model, name, precision)
        for name in ("g_ab", "g_ba")
    }
    signature = [tf.TensorSpec([None, None, None, 3], tf.float32)]
    translate = {
        direction: tf.function(
            lambda x, net=net: net(x, training=False), input_signature=signature, autograph=False
        )
        for direction, net in (("a2b", nets["g_ab"]), ("b2a", nets["g_ba"]))
    }
    samples = None
    if not args.no_grid:
        unpaired = data.load(config.data, seed=config.train.seed)
        samples = training.grid_samples(unpaired, training.NUM_GRID_SAMPLES)

    def weights():
        return {name: [w.copy() for w in net.get_weights()] for name, net in nets.items()}

    def load(ws):
        for name, net in nets.items():
            net.set_weights(ws[name])

    real_a, truth_b = synthetic.load_test_pairs(builtin_dir)

    def roughness(images):
        """Mean |4-neighbour Laplacian| / 4 over the images (edges and speckle; not a score.json
        key): the crisp truth has it only at outlines and band edges, speckle raises it."""
        x = np.asarray(images, np.float64)
        lap = 4 * x[:, 1:-1, 1:-1] - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2]
        lap -= x[:, 1:-1, 2:]
        return float(np.mean(np.abs(lap)) / 4)

    def contrast_ratio(images):
        """c(images) / c(truth) of score's stripe_error (which is |ratio - 1|): below 1 the bands
        (plus any speckle) are weaker than the truth's, above 1 stronger."""
        t, y = synthetic._as_batch(images), synthetic._as_batch(truth_b)
        k = 2 * int(round(synthetic.band_period(y.shape[2]))) + 1
        mask_y = synthetic._object_mask(y)
        interior = synthetic._box(mask_y.astype(np.float32)[..., None], k)[..., 0] > 0.999
        c_t = synthetic._contrast(t, synthetic._box(t, k), interior)
        return c_t / synthetic._contrast(y, synthetic._box(y, k), interior)

    print(json.dumps({"roughness_truth_b": round(roughness(truth_b), 4)}), flush=True)

    def evaluate(label, step, extra):
        score = synthetic.score_translation(translate["a2b"], builtin_dir)["g_ab"]
        fakes = np.concatenate(
            [np.asarray(translate["a2b"](real_a[i : i + 8])) for i in range(0, len(real_a), 8)]
        )
        row = {
            "variant": label,
            "step": step,
            **extra,
            **{k: round(v, 4) for k, v in score.items() if not k.startswith("identity/")},
            "roughness": round(roughness(fakes), 4),
            "contrast_ratio": round(contrast_ratio(fakes), 3),
        }
        print(json.dumps(row), flush=True)
        return row

    def grid(label, step):
        fake_b = translate["a2b"](samples["real_a"])
        fake_a = translate["b2a"](samples["real_b"])
        rows = {
            "real_a": samples["real_a"],
            "fake_b": fake_b,
            "rec_a": translate["b2a"](fake_b),
            "real_b": samples["real_b"],
            "fake_a": fake_a,
            "rec_b": translate["a2b"](fake_a),
        }
        rows = {k: np.asarray(v) for k, v in rows.items()}
        path = os.path.join(out_dir, f"grid_{label}_step{step}.png")
        visualize.save_grid(rows, path, title=f"{label} (step {step})")
        print(json.dumps({"grid": path}), flush=True)

    # variant key -> (decay, start, debias); state: average (or weighted sum) and total weight
    variants = {}
    for d in decays:
        for s in starts:
            variants[f"ema{d:g}_from{s}"] = (d, s, False)
            if args.debias:
                variants[f"ema{d:g}_from{s}_debiased"] = (d, s, True)
    avg = {key: None for key in variants}
    norm = {key: 0.0 for key in variants}
    rows = []
    previous = None
    for path, step in zip(paths, steps):
        checkpoints.restore_generators(path, g_ab=nets["g_ab"], g_ba=nets["g_ba"])
        w = weights()
        raw_needed = step in at
        for key, (d, s, debias) in variants.items():
            if step < s:
                continue
            if avg[key] is None:  # the first checkpoint of this average
                # plain: the average starts as these weights; debiased: as (1 - a) times them
                # (a zero-started EMA), divided by the total weight when used
                first = 1.0 - d ** (step - (previous or 0)) if debias else 1.0
                avg[key] = {n: [first * x.astype(np.float64) for x in ws] for n, ws in w.items()}
                norm[key] = first
                continue
            a = d ** (step - previous)
            for n, ws in w.items():
                for acc, x in zip(avg[key][n], ws):
                    acc *= a
                    acc += (1 - a) * x
            norm[key] = a * norm[key] + (1 - a)  # stays 1 for the plain average
        previous = step
        if raw_needed:
            rows.append(evaluate("raw", step, {}))
            if samples is not None and step == at[-1]:
                grid("raw", step)
            for key, (d, s, debias) in variants.items():
                if avg[key] is None:
                    continue
                scale = 1.0 / norm[key]
                load(
                    {n: [(x * scale).astype(np.float32) for x in ws] for n, ws in avg[key].items()}
                )
                rows.append(evaluate(key, step, {"decay": d, "start": s, "debiased": debias}))
                if samples is not None and step == at[-1]:
                    grid(key, step)
    with open(os.path.join(out_dir, "ema.jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
