"""`pop-tf bench`: measured speed figures, printed and optionally written as JSON.

Every TensorFlow figure comes with the matmul GFLOP/s measured in the same run (`matmul`, and
`matmul_bfloat16` / `matmul_float16` when `--precision` names that policy), so it can be read as
a fraction of this machine's peak in the precision it ran in; each workload is warmed up (2 calls, which also trace it), then timed `--repeats` times
(median, min, max). FLOPs of a training step are the TF profiler's FLOP statistics summed over
the traced step graph (forward, backward and optimizer ops of every update; `_graph_flops`).
- `matmul`: 4096² float32 matmul GFLOP/s.
- `ranker`: the siamese ranker's train step (both optimizers) at `--size`, `--batch` pairs, as
  `fit()` compiles it (tf.function, reduce_retracing, `--jit`); images/s count both sides of each
  pair; `peak_fraction` = achieved GFLOP/s / matmul peak. `gflop_per_step_3x_forward` (3 × the
  profiled forward pass of every image) cross-checks the step graph's count.
- `translator`: one full DMIT training iteration, `DMITTrainer.train_step` (all six updates), at
  `--size` with `--batch` images per iteration (`--batch`/2 domain pairs: x = [image_a; image_b],
  as DMIT's loader concatenates one image per domain), at the official widths unless `--set`
  changes the `train_translator` options (e.g. `--set base_filters=8`).
- `serving`: the ranker SavedModel's `score` endpoint against the in-process Keras model.
- `sample`: the translator SavedModel's `sample` endpoint (one prior style per image) against
  the in-process `DMITTrainer.sample`, `--batch` images per call.
- `input`: decoded, augmented pair batches/s from the pair TFRecords (`--pairs DIR`, default a
  small synthetic set); with `ranker` in the same run also `ratio_to_ranker_step`, the pairs/s
  the pipeline delivers over the pairs/s the train step consumes (the issue asks ≥ 10).
`--precision` (comma-separated `pop_tf.precision` policies: none, float16, bfloat16, auto; default
none) runs `ranker`, `translator`, `serving` and `sample` once per policy: the float32 rows keep
their plain names, the others get the policy as a suffix (`ranker_train_step_bfloat16`) and a
`speedup` over the float32 row of the same run. `--jit` applies to the two train steps.

`--what ingest` times the Beam ingest job against a plain single-process loop that does the same
per-image work (read, decode, pad/resize, edge map, hashes, PNG encode, TFRecord write) on the
same synthetic dataset, in one run, so the ratio holds however fast this machine is today; then
the job again with 2 worker processes. Each figure is the median of `--repeats` runs, with min/max.
"""

import argparse
import dataclasses
import json
import logging
import os
import statistics
import sys
import tempfile
import time

from pop_tf import config as config_lib
from pop_tf import contracts, layout

log = logging.getLogger(__name__)

TF_BENCHMARKS = ("ranker", "translator", "serving", "sample", "input", "matmul")
WARMUP_CALLS = 2
# Graph ops the FLOP count cannot see into: calls of nested functions and control flow
# (e.g. a LossScaleOptimizer's conditional update).
_NESTED_OPS = {"PartitionedCall", "StatefulPartitionedCall", "If", "StatelessIf", "While", "StatelessWhile"}


def plain_loop(dataset: str, output: str, size: int) -> int:
    """The per-record work of ingest (validation, paper filters, and for the records that pass
    them: read, decode, pad/resize, edge map, hashes, PNG encode, GZIP TFRecord write) in one
    process with no pipeline around it, and without TensorFlow, as the Beam workers; returns the
    records handled."""
    import gzip

    from pop_tf import records
    from pop_tf.beam import images, metadata, sinks
    from pop_tf.beam.reasons import Rejected

    path = os.path.join(dataset, "metadata.jsonl")
    with open(path, "rb") as f:
        raws = list(metadata.iter_raw_records(path, f.read()))
    os.makedirs(output, exist_ok=True)
    # zlib level 6, as Beam's GZIP writer (gzip.open defaults to 9, which is slower).
    with gzip.open(os.path.join(output, "plain.tfrecord.gz"), "wb", compresslevel=6) as writer:
        for raw in raws:
            if raw.fields is None:
                continue
            try:
                post = metadata.apply_filters(metadata.validate_record(raw.fields))
                with open(os.path.join(dataset, post["image"]), "rb") as f:
                    image = images.decode_image(f.read())
            except (Rejected, OSError):
                continue
            pixels = images.pad_to_square_and_resize(image, size)
            post.update(image_png=images.encode_png(pixels), edge_png=images.encode_png(images.edge_map(pixels)),
                        image_size=size, phash=images.perceptual_hash(pixels),
                        pixel_digest=images.pixel_digest(pixels), split="train", source_index=raw.index)
            images.colour_signature(pixels)
            sinks.write_record(writer, records.encode_post(post))
    return len(raws)


def _timed(fn, repeats: int) -> dict:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds)}


def _warm_then_timed(fn, repeats: int) -> dict:
    """`_timed` after `WARMUP_CALLS` untimed calls (tracing, XLA compilation, allocator warm-up)."""
    for _ in range(WARMUP_CALLS):
        fn()
    return _timed(fn, repeats)


def bench_ingest(num_images: int, size: int, source_size: int, repeats: int) -> dict:
    from pop_tf import synth
    from pop_tf.stages import ingest

    with tempfile.TemporaryDirectory(prefix="pop_tf_bench_") as tmp:
        dataset = os.path.join(tmp, "dataset")
        log.info(f"bench ingest: writing {num_images} synthetic posts at {source_size}px …")
        synth.run(config_lib.SynthConfig(output=dataset, num_posts=num_images, image_size=source_size, seed=0))

        def ingest_with(args):
            cfg = config_lib.IngestConfig(input=dataset, output=os.path.join(tmp, "out"), image_size=size)
            return lambda: ingest.run(cfg, args)

        plain_out = os.path.join(tmp, "plain")
        os.makedirs(plain_out)
        runs = {
            "plain_pil_loop": lambda: plain_loop(dataset, plain_out, size),
            "ingest_1_worker": ingest_with([]),
            "ingest_2_workers": ingest_with(["--direct_num_workers=2", "--direct_running_mode=multi_processing"]),
        }
        results = {}
        for name, fn in runs.items():
            log.info(f"bench ingest: {name} ×{repeats} …")
            results[name] = _timed(fn, repeats)
            results[name]["images_per_s"] = num_images / results[name]["median_s"]
    plain = results["plain_pil_loop"]["images_per_s"]
    for name in ("ingest_1_worker", "ingest_2_workers"):
        results[name]["ratio_to_plain"] = results[name]["images_per_s"] / plain
    return {"what": "ingest", "num_images": num_images, "image_size": size, "source_size": source_size,
            "repeats": repeats, "cpu_count": os.cpu_count(), "results": results}


def _matmul_gflops(repeats: int, dtype: str = "float32") -> dict:
    import tensorflow as tf

    a = tf.cast(tf.random.stateless_normal([4096, 4096], seed=[0, 1]), dtype)
    b = tf.cast(tf.random.stateless_normal([4096, 4096], seed=[0, 2]), dtype)
    matmul = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32)))
    timing = _warm_then_timed(lambda: matmul().numpy(), repeats)
    timing["gflops"] = 2 * 4096 ** 3 / timing["median_s"] / 1e9
    return timing


def _graph_flops(graph) -> tuple:
    """(FLOPs, uncounted ops) of a traced graph: the TF profiler's per-op FLOP statistics, summed.

    These are the numbers `tf.compat.v1.profiler` adds up (convolutions and their two backward
    kernels, matmuls, element-wise ops). Uncounted are ops whose shapes are not static and
    calls into nested functions or control flow, whose insides the statistics do not reach.
    """
    from tensorflow.python.framework import ops

    total, uncounted = 0, 0
    for op in graph.get_operations():
        if op.type in _NESTED_OPS:
            uncounted += 1
            continue
        try:
            stats = ops.get_stats_for_node_def(graph, op.node_def, "flops")
        except ValueError:  # a shape that is not fully known
            uncounted += 1
            continue
        total += int(stats.value or 0)
    return float(total), uncounted


def _forward_flops(model, size: int) -> float:
    """FLOPs of one image's forward pass, from the profiler's statistics of the traced graph."""
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, size, size, 3], tf.float32))
    return _graph_flops(forward.graph)[0]


def _time_train_step(train_step, batch, repeats: int, jit: bool) -> dict:
    """Times `train_step(batch)` compiled as `fit()` compiles it; adds the step graph's FLOPs."""
    import tensorflow as tf

    step = tf.function(train_step, reduce_retracing=True, jit_compile=jit)
    # Traced once here, with the batch's static shapes; the timed calls reuse this trace.
    flops, uncounted = _graph_flops(step.get_concrete_function(batch).graph)
    # Fetching one output waits for the whole step: the function returns when all its ops have run.
    timing = _warm_then_timed(lambda: next(iter(step(batch).values())).numpy(), repeats)
    timing["gflop_per_step"] = flops / 1e9
    timing["flops_uncounted_ops"] = uncounted
    timing["achieved_gflops"] = timing["gflop_per_step"] / timing["median_s"]
    return timing


def bench_ranker(backbone: str, size: int, batch: int, repeats: int, jit: bool, precision: str = "none") -> dict:
    import keras
    import tensorflow as tf

    from pop_tf import precision as precision_lib
    from pop_tf.models import ranker as ranker_lib

    keras.utils.set_random_seed(0)
    ranker = ranker_lib.build_ranker(backbone, "none", size, mixed_precision=precision)
    trainer = ranker_lib.SiameseRankerTrainer(ranker)
    trainer.compile(precision_lib.loss_scaled(keras.optimizers.Adam(1e-5), precision),
                    precision_lib.loss_scaled(keras.optimizers.Adam(1e-4), precision))
    trainer.build_optimizers()
    rng = tf.random.stateless_uniform([2, batch, size, size, 3], seed=[0, 3], maxval=256, dtype=tf.int32)
    batch_data = {"image_a": tf.cast(rng[0], tf.uint8), "image_b": tf.cast(rng[1], tf.uint8),
                  "target": tf.ones([batch])}
    timing = _time_train_step(trainer.train_step, batch_data, repeats, jit)
    images = 2 * batch
    timing["images_per_s"] = images / timing["median_s"]
    timing["pairs_per_s"] = batch / timing["median_s"]
    timing["gflop_per_step_3x_forward"] = 3 * _forward_flops(ranker, size) * images / 1e9
    return timing


def translator_config(size: int, sets: list, jit: bool):
    """The `TranslatorConfig` benchmarked: the official DMIT options, then `sets` (train_translator
    keys), then `--size` and `--jit` (`--precision` replaces `mixed_precision` per run).

    Raises:
        config_lib.ConfigError: a key of another section, or a config no DMIT can be built from
            (model, diversity=clusters, sizes); the message names the option.
    """
    from pop_tf.stages import train_translator

    for pair in sets:
        key, _ = config_lib.parse_set(pair, "train_translator")
        if not key.startswith("train_translator."):
            raise config_lib.ConfigError(f"--set {pair}: the bench only takes train_translator keys")
    cfg = config_lib.resolve(None, sets, default_section="train_translator").train_translator
    if cfg.model != "dmit" or cfg.diversity == "clusters":
        raise config_lib.ConfigError("--set: the translator bench runs DMIT (train_translator.model=dmit) with "
                                     "diversity none or ms (clusters needs a cluster stage's output)")
    cfg = dataclasses.replace(cfg, image_size=size, jit_compile=cfg.jit_compile or jit)
    train_translator._check_dmit_sizes(cfg)
    return cfg


def _domain_batch(pairs: int, size: int) -> dict:
    """A DMIT batch of random images: unpopular colour images paired with popular colour ones."""
    import tensorflow as tf

    from pop_tf import data

    images = tf.random.stateless_uniform([2, pairs, size, size, 3], seed=[0, 4], minval=-1.0, maxval=1.0)
    return {"image_a": images[0], "label_a": tf.tile(data.domain_label("unpopular", "color")[None], [pairs, 1]),
            "image_b": images[1], "label_b": tf.tile(data.domain_label("popular", "color")[None], [pairs, 1])}


def bench_translator(cfg, images: int, repeats: int) -> dict:
    """One DMIT iteration on `images` images (images/2 domain pairs), built and compiled as the stage does."""
    from pop_tf.stages import train_translator

    trainer = train_translator.build_dmit(cfg)
    train_translator.compile_dmit(trainer, cfg, cfg.learning_rate)
    timing = _time_train_step(trainer.train_step, _domain_batch(images // 2, cfg.image_size), repeats,
                              cfg.jit_compile)
    timing["images_per_iteration"] = images
    timing["images_per_s"] = images / timing["median_s"]
    return timing


def _compare_serving(calls: dict, images: int, repeats: int, saved_model: str, keras_name: str) -> dict:
    """Times each of `calls` (name → fn); the SavedModel's row gets its ratio to the Keras row."""
    results = {name: _warm_then_timed(fn, repeats) for name, fn in calls.items()}
    for row in results.values():
        row["images_per_s"] = images / row["median_s"]
    results[saved_model]["ratio_to_keras"] = results[saved_model]["images_per_s"] / results[keras_name]["images_per_s"]
    return results


def bench_serving(backbone: str, size: int, batch: int, repeats: int, precision: str = "none") -> dict:
    """The ranker's `score` endpoint (what the score stage calls) of a ranker built under `precision`."""
    import numpy as np
    import tensorflow as tf

    from pop_tf import serving
    from pop_tf.models import ranker as ranker_lib

    ranker = ranker_lib.build_ranker(backbone, "none", size, mixed_precision=precision)
    images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3)).astype(np.uint8)
    keras_forward = tf.function(lambda x: ranker(tf.cast(x, tf.float32) / 255.0, training=False))
    with tempfile.TemporaryDirectory(prefix="pop_tf_bench_") as tmp:
        loaded = tf.saved_model.load(serving.export_ranker(ranker, os.path.join(tmp, "1"), {}, ""))
        return _compare_serving({"keras_in_process": lambda: keras_forward(images).numpy(),
                                 "saved_model_score": lambda: loaded.score(images)["score"].numpy()},
                                batch, repeats, "saved_model_score", "keras_in_process")


def bench_sample(cfg, batch: int, repeats: int) -> dict:
    """The translator SavedModel's `sample` endpoint against the in-process trainer (networks
    built under `cfg.mixed_precision`)."""
    import numpy as np
    import tensorflow as tf

    from pop_tf import data, serving
    from pop_tf.stages import train_translator

    trainer = train_translator.build_dmit(cfg)
    size = cfg.image_size
    images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3)).astype(np.uint8)
    domains = tf.constant(["popular/color"] * batch)
    labels = tf.constant(np.tile(data.domain_label("popular", "color"), (batch, 1)))
    keras_sample = tf.function(lambda x: trainer.sample(data.to_signed_unit(x), labels, seed=0, num_samples=1))
    seed, num_samples = tf.constant(0, tf.int64), tf.constant(1, tf.int32)
    with tempfile.TemporaryDirectory(prefix="pop_tf_bench_") as tmp:
        loaded = tf.saved_model.load(serving.export_translator(trainer, os.path.join(tmp, "1"),
                                                               {"image_size": size}, ""))
        endpoint = lambda: loaded.sample(images, domains, seed, num_samples)["images"].numpy()  # noqa: E731
        return _compare_serving({"translator_keras_in_process": lambda: keras_sample(images).numpy(),
                                 "translator_saved_model_sample": endpoint},
                                batch, repeats, "translator_saved_model_sample", "translator_keras_in_process")


def bench_input(pairs_dir: str, stored_size: int, size: int, batch: int, repeats: int) -> dict:
    from pop_tf import data

    dataset = data.pair_dataset(layout.pair_shard_pattern(pairs_dir, "train"), stored_size, size, batch,
                                training=True, max_shift=0.1)
    iterator = iter(dataset)
    next(iterator)
    batches = 20
    timing = _timed(lambda: [next(iterator) for _ in range(batches)], repeats)
    timing["batches_per_s"] = batches / timing["median_s"]
    timing["pairs_per_s"] = timing["batches_per_s"] * batch
    return timing


def _input_pipeline(pairs: str, size: int, batch: int, repeats: int) -> dict:
    """`bench_input` on `pairs`, or on a small synthetic pairs output made for the run."""
    with tempfile.TemporaryDirectory(prefix="pop_tf_bench_") as tmp:
        if not pairs:
            from pop_tf import pipeline
            pipeline.run(config_lib.resolve("demo", ["synth.num_posts=400"]), tmp, until="pairs")
            pairs = contracts.folder(tmp, "pairs")
        with open(os.path.join(pairs, layout.STATS)) as f:
            stored = json.load(f)["image_size"]
        log.info(f"bench: input pipeline from {pairs} …")
        return bench_input(pairs, stored, size, batch, repeats)


def _with_peak(row: dict, results: dict, precision: str) -> dict:
    """Adds the peak of the row's compute dtype and its fraction of it."""
    peak_name = _suffixed("matmul", precision)
    row["precision"] = precision
    row["peak"] = peak_name
    row["peak_fraction"] = row["achieved_gflops"] / results[peak_name]["gflops"]
    return row


def _suffixed(name: str, precision: str) -> str:
    return name if precision == "none" else f"{name}_{precision}"


def _add_rows(results: dict, rows: dict, precision: str) -> None:
    """`rows` into `results` under the policy's names, each mixed row with its `speedup` over the
    float32 row of the same name when this run measured one."""
    for name, row in rows.items():
        if precision != "none" and name in results:
            row["speedup"] = row["images_per_s"] / results[name]["images_per_s"]
        results[_suffixed(name, precision)] = row


def bench_tf(what: list, backbone: str, size: int, batch: int, repeats: int, jit: bool, pairs: str,
             precisions=("none",), translator=None) -> dict:
    """Runs the TensorFlow benchmarks named in `what`, the model ones once per policy of
    `precisions` (float32 first, so the others get their speed-up); `translator` is the
    `translator_config` for `translator` and `sample`."""
    from pop_tf import precision as precision_lib

    precisions = sorted({precision_lib.resolve(p) for p in precisions}, key=precision_lib.PRECISIONS.index)
    report = {"what": what, "backbone": backbone, "size": size, "batch": batch, "repeats": repeats,
              "cpu_count": os.cpu_count(), "jit_compile": jit, "precisions": precisions, "results": {}}
    results = report["results"]
    results["matmul"] = _matmul_gflops(repeats)
    for precision in precisions:
        if precision != "none":
            results[_suffixed("matmul", precision)] = _matmul_gflops(repeats, precision)
    if translator is not None:
        report["translator"] = config_lib.to_dict(translator)
    for precision in precisions:
        rows = {}
        if "ranker" in what:
            log.info(f"bench: ranker train step ({backbone}, {size}², {batch} pairs, {precision}) …")
            rows["ranker_train_step"] = _with_peak(bench_ranker(backbone, size, batch, repeats, jit, precision),
                                                   results, precision)
        if "translator" in what:
            cfg = dataclasses.replace(translator, mixed_precision=precision)
            log.info(f"bench: DMIT train iteration (base_filters {cfg.base_filters}, {size}², {batch} images, "
                     f"{precision}) …")
            rows["translator_train_step"] = _with_peak(bench_translator(cfg, batch, repeats), results, precision)
        if "serving" in what:
            log.info(f"bench: ranker SavedModel vs Keras ({backbone}, {size}², batch {batch}, {precision}) …")
            rows.update(bench_serving(backbone, size, batch, repeats, precision))
        if "sample" in what:
            log.info(f"bench: translator SavedModel sample vs Keras ({size}², batch {batch}, {precision}) …")
            rows.update(bench_sample(dataclasses.replace(translator, mixed_precision=precision), batch, repeats))
        _add_rows(results, rows, precision)
    if "input" in what:
        row = results["input_pipeline"] = _input_pipeline(pairs, size, batch, repeats)
        if "ranker_train_step" in results:
            row["ratio_to_ranker_step"] = row["pairs_per_s"] / results["ranker_train_step"]["pairs_per_s"]
    return report


def _speedup(row: dict) -> str:
    return f"  ×{row['speedup']:.2f} of float32" if "speedup" in row else ""


def _print_step(label: str, row: dict) -> None:
    print(f"  {label:38s} {row['images_per_s']:8.3f} images/s  {row['achieved_gflops']:.1f} GFLOP/s "
          f"= {row['peak_fraction']:.0%} of {row['peak']}  ({row['gflop_per_step']:.1f} GFLOP/step, median "
          f"{row['median_s']:.3f}s, min {row['min_s']:.3f}s, max {row['max_s']:.3f}s){_speedup(row)}")


def _print_tf(report: dict) -> None:
    results = report["results"]
    print(f"\nTensorFlow benchmarks at {report['size']}², batch {report['batch']}, median of {report['repeats']}, "
          f"{report['cpu_count']} CPUs, jit_compile={report['jit_compile']}, "
          f"precisions={','.join(report['precisions'])}")
    for name in ("matmul", "matmul_bfloat16", "matmul_float16"):
        if name in results:
            print(f"  {name + ' 4096²':38s} {results[name]['gflops']:8.1f} GFLOP/s (this run's peak)")
    labels = {"keras_in_process": f"ranker Keras ({report['backbone']})",
              "saved_model_score": "ranker SavedModel score",
              "translator_keras_in_process": "DMIT Keras sample",
              "translator_saved_model_sample": "DMIT SavedModel sample"}
    for precision in report["precisions"]:
        tag = "" if precision == "none" else f" [{precision}]"
        if _suffixed("ranker_train_step", precision) in results:
            _print_step(f"ranker train step ({report['backbone']}){tag}",
                        results[_suffixed("ranker_train_step", precision)])
        if _suffixed("translator_train_step", precision) in results:
            _print_step(f"DMIT iteration (width {report['translator']['base_filters']}){tag}",
                        results[_suffixed("translator_train_step", precision)])
        for name, label in labels.items():
            row = results.get(_suffixed(name, precision))
            if row is not None:
                ratio = f"  ×{row['ratio_to_keras']:.2f} of Keras" if "ratio_to_keras" in row else ""
                print(f"  {label + tag:38s} {row['images_per_s']:8.3f} images/s (median {row['median_s']:.3f}s)"
                      f"{ratio}{_speedup(row)}")
    if "input_pipeline" in results:
        row = results["input_pipeline"]
        ratio = (f"  ×{row['ratio_to_ranker_step']:.1f} of what the ranker step consumes"
                 if "ratio_to_ranker_step" in row else "")
        print(f"  {'input pipeline':38s} {row['pairs_per_s']:8.1f} pairs/s ({row['batches_per_s']:.1f} "
              f"batches/s){ratio}")


def _write_json(report: dict, path: str) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pop-tf bench", description=__doc__.splitlines()[0])
    parser.add_argument("--what", default="ingest",
                        help="comma-separated: ingest, or any of ranker, translator, serving, sample, input "
                             "(matmul always runs)")
    parser.add_argument("--backbone", default="resnet50", choices=["resnet50", "small"])
    parser.add_argument("--batch", type=int, default=8,
                        help="pairs per ranker step, images per translator iteration (two per pair), "
                             "images per serving or sample call")
    parser.add_argument("--jit", action="store_true", help="XLA-compile the ranker and translator train steps")
    parser.add_argument("--precision", default="none",
                        help="comma-separated compute policies to run ranker, translator, serving and sample "
                             "under: none (float32), float16, bfloat16, auto; e.g. none,bfloat16")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="a train_translator option for translator and sample (default: the official DMIT "
                             "widths), e.g. --set base_filters=8; repeatable")
    parser.add_argument("--pairs", help="a pairs output folder for --what input (default: a small synthetic one)")
    parser.add_argument("--num-images", type=int, default=300)
    parser.add_argument("--size", type=int, default=None, help="image size (ingest output 256, models 224)")
    parser.add_argument("--source-size", type=int, default=512, help="size of the synthetic source images")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    what = [w.strip() for w in args.what.split(",") if w.strip()]
    unknown = set(what) - {"ingest", *TF_BENCHMARKS}
    if unknown or ("ingest" in what and len(what) > 1):
        parser.error(f"--what: {', '.join(sorted(unknown)) or 'ingest'} — use ingest alone, or any of "
                     f"{', '.join(TF_BENCHMARKS)}")
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: time at least one call")
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    from pop_tf import precision as precision_lib
    wrong = [p for p in precisions if p not in precision_lib.PRECISIONS]
    if wrong or not precisions:
        parser.error(f"--precision {args.precision}: use any of {', '.join(precision_lib.PRECISIONS)}")
    if args.sets and not {"translator", "sample"} & set(what):
        parser.error("--set: only the translator and sample benchmarks take train_translator options")
    if "translator" in what and (args.batch < 2 or args.batch % 2):
        parser.error(f"--batch {args.batch}: a translator iteration takes an even number of images "
                     "(pairs of one image per domain)")
    if what != ["ingest"]:
        size = args.size or 224
        translator = None
        if {"translator", "sample"} & set(what):
            try:
                translator = translator_config(size, args.sets, args.jit)
            except config_lib.ConfigError as e:
                parser.error(str(e))
        report = bench_tf(what, args.backbone, size, args.batch, args.repeats, args.jit, args.pairs,
                          precisions, translator)
        _print_tf(report)
        _write_json(report, args.json)
        return 0
    args.size = args.size or 256
    report = bench_ingest(args.num_images, args.size, args.source_size, args.repeats)
    print(f"\ningest benchmark: {report['num_images']} posts, {report['source_size']}px sources → "
          f"{report['image_size']}px, median of {report['repeats']}, {report['cpu_count']} CPUs")
    for name, row in report["results"].items():
        ratio = f"  ×{row['ratio_to_plain']:.2f} of plain" if "ratio_to_plain" in row else ""
        print(f"  {name:18s} {row['images_per_s']:7.1f} images/s  "
              f"(median {row['median_s']:.2f}s, min {row['min_s']:.2f}s, max {row['max_s']:.2f}s){ratio}")
    _write_json(report, args.json)
    return 0


if __name__ == "__main__":
    from pop_tf.cli import configure_logging
    configure_logging()
    sys.exit(main())
