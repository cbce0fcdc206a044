"""`pop-tf bench`: measured speed figures, printed and optionally written as JSON.

Every TensorFlow figure comes with the float32 matmul GFLOP/s measured in the same run
(`matmul`), so it can be read as a fraction of this machine's peak; steps are warmed up, then
timed `--repeats` times (median, min, max).
- `matmul`: 4096² float32 matmul GFLOP/s.
- `ranker`: the siamese ranker's train step (both optimizers) at `--size`, `--batch` pairs, as
  `fit()` compiles it; images/s count both sides of each pair; FLOPs from the TF profiler's count
  of one forward pass × 3 (forward + backward), so `peak_fraction` = achieved / matmul peak.
- `serving`: the ranker SavedModel's `score` endpoint against the in-process Keras model.
- `input`: decoded, augmented pair batches/s from the pair TFRecords (`--pairs DIR`, default a
  small synthetic set).

`--what ingest` times the Beam ingest job against a plain single-process loop that does the same
per-image work (read, decode, pad/resize, edge map, hashes, PNG encode, TFRecord write) on the
same synthetic dataset, in one run, so the ratio holds however fast this machine is today; then
the job again with 2 worker processes. Each figure is the median of `--repeats` runs, with min/max.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from pop_tf import config as config_lib


def _plain_loop(dataset: str, output: str, size: int) -> int:
    """The per-record work of ingest (validation, paper filters, and for the records that pass
    them: read, decode, pad/resize, edge map, hashes, PNG encode, TFRecord write) with no
    pipeline around it; returns the records handled."""
    import tensorflow as tf

    from pop_tf import records
    from pop_tf.beam import images, metadata
    from pop_tf.beam.reasons import Rejected

    path = os.path.join(dataset, "metadata.jsonl")
    with open(path, "rb") as f:
        raws = list(metadata.iter_raw_records(path, f.read()))
    with tf.io.TFRecordWriter(os.path.join(output, "plain.tfrecord.gz"), options="GZIP") as writer:
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
            writer.write(records.encode_post(post))
    return len(raws)


def _timed(fn, repeats: int) -> dict:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds)}


def bench_ingest(num_images: int, size: int, source_size: int, repeats: int) -> dict:
    from pop_tf import synth
    from pop_tf.stages import ingest

    with tempfile.TemporaryDirectory(prefix="pop_tf_bench_") as tmp:
        dataset = os.path.join(tmp, "dataset")
        print(f"bench ingest: writing {num_images} synthetic posts at {source_size}px …", file=sys.stderr)
        synth.run(config_lib.SynthConfig(output=dataset, num_posts=num_images, image_size=source_size, seed=0))

        def ingest_with(args):
            cfg = config_lib.IngestConfig(input=dataset, output=os.path.join(tmp, "out"), image_size=size)
            return lambda: ingest.run(cfg, args)

        plain_out = os.path.join(tmp, "plain")
        os.makedirs(plain_out)
        runs = {
            "plain_pil_loop": lambda: _plain_loop(dataset, plain_out, size),
            "ingest_1_worker": ingest_with([]),
            "ingest_2_workers": ingest_with(["--direct_num_workers=2", "--direct_running_mode=multi_processing"]),
        }
        results = {}
        for name, fn in runs.items():
            print(f"bench ingest: {name} ×{repeats} …", file=sys.stderr)
            results[name] = _timed(fn, repeats)
            results[name]["images_per_s"] = num_images / results[name]["median_s"]
    plain = results["plain_pil_loop"]["images_per_s"]
    for name in ("ingest_1_worker", "ingest_2_workers"):
        results[name]["ratio_to_plain"] = results[name]["images_per_s"] / plain
    return {"what": "ingest", "num_images": num_images, "image_size": size, "source_size": source_size,
            "repeats": repeats, "cpu_count": os.cpu_count(), "results": results}


def _matmul_gflops(repeats: int) -> dict:
    import tensorflow as tf

    a = tf.random.stateless_normal([4096, 4096], seed=[0, 1])
    b = tf.random.stateless_normal([4096, 4096], seed=[0, 2])
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    matmul().numpy()
    timing = _timed(lambda: matmul().numpy(), repeats)
    timing["gflops"] = 2 * 4096 ** 3 / timing["median_s"] / 1e9
    return timing


def _forward_flops(model, size: int) -> float:
    """FLOPs of one image's forward pass, from the TF profiler's op count of the traced graph."""
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder

    forward = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, size, size, 3], tf.float32))
    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return float(model_analyzer.profile(forward.graph, options=options).total_float_ops)


def _ranker(backbone: str, size: int):
    import keras
    import tensorflow as tf

    from pop_tf.models import ranker as ranker_lib

    keras.utils.set_random_seed(0)
    ranker = ranker_lib.PopularityRanker(ranker_lib.build_backbone(backbone, "none", size))
    ranker(tf.zeros([1, size, size, 3]))
    return ranker


def bench_ranker(backbone: str, size: int, batch: int, repeats: int, jit: bool) -> dict:
    import keras
    import tensorflow as tf

    from pop_tf.models import ranker as ranker_lib

    ranker = _ranker(backbone, size)
    trainer = ranker_lib.SiameseRankerTrainer(ranker)
    trainer.compile(keras.optimizers.Adam(1e-5), keras.optimizers.Adam(1e-4))
    trainer.build_optimizers()
    rng = tf.random.stateless_uniform([2, batch, size, size, 3], seed=[0, 3], maxval=256, dtype=tf.int32)
    batch_data = {"image_a": tf.cast(rng[0], tf.uint8), "image_b": tf.cast(rng[1], tf.uint8),
                  "target": tf.ones([batch])}
    step = tf.function(trainer.train_step, reduce_retracing=True, jit_compile=jit)
    for _ in range(2):
        step(batch_data)["loss"].numpy()
    timing = _timed(lambda: step(batch_data)["loss"].numpy(), repeats)
    images = 2 * batch
    timing["images_per_s"] = images / timing["median_s"]
    timing["gflop_per_step"] = 3 * _forward_flops(ranker, size) * images / 1e9
    timing["achieved_gflops"] = timing["gflop_per_step"] / timing["median_s"]
    return timing


def bench_serving(backbone: str, size: int, batch: int, repeats: int) -> dict:
    import numpy as np
    import tensorflow as tf

    from pop_tf import serving

    ranker = _ranker(backbone, size)
    images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3)).astype(np.uint8)
    keras_forward = tf.function(lambda x: ranker(tf.cast(x, tf.float32) / 255.0, training=False))
    with tempfile.TemporaryDirectory(prefix="pop_tf_bench_") as tmp:
        path = serving.export_ranker(ranker, os.path.join(tmp, "1"), {}, "")
        loaded = tf.saved_model.load(path)
        results = {}
        for name, fn in (("keras_in_process", lambda: keras_forward(images).numpy()),
                         ("saved_model_score", lambda: loaded.score(images)["score"].numpy())):
            fn(), fn()
            results[name] = _timed(fn, repeats)
            results[name]["images_per_s"] = batch / results[name]["median_s"]
    results["saved_model_score"]["ratio_to_keras"] = (results["saved_model_score"]["images_per_s"]
                                                      / results["keras_in_process"]["images_per_s"])
    return results


def bench_input(pairs_dir: str, stored_size: int, size: int, batch: int, repeats: int) -> dict:
    from pop_tf import data

    dataset = data.pair_dataset(os.path.join(pairs_dir, "train_pairs-*.tfrecord.gz"), stored_size, size, batch,
                                training=True, max_shift=0.1)
    iterator = iter(dataset)
    next(iterator)
    batches = 20
    timing = _timed(lambda: [next(iterator) for _ in range(batches)], repeats)
    timing["batches_per_s"] = batches / timing["median_s"]
    timing["pairs_per_s"] = timing["batches_per_s"] * batch
    return timing


def bench_tf(what: list, backbone: str, size: int, batch: int, repeats: int, jit: bool, pairs: str) -> dict:
    report = {"what": what, "backbone": backbone, "size": size, "batch": batch, "repeats": repeats,
              "cpu_count": os.cpu_count(), "jit_compile": jit, "results": {}}
    results = report["results"]
    results["matmul"] = _matmul_gflops(repeats)
    peak = results["matmul"]["gflops"]
    if "ranker" in what:
        print(f"bench: ranker train step ({backbone}, {size}², {batch} pairs) …", file=sys.stderr)
        results["ranker_train_step"] = bench_ranker(backbone, size, batch, repeats, jit)
        results["ranker_train_step"]["peak_fraction"] = results["ranker_train_step"]["achieved_gflops"] / peak
    if "serving" in what:
        print(f"bench: ranker SavedModel vs Keras ({backbone}, {size}², batch {batch}) …", file=sys.stderr)
        results.update(bench_serving(backbone, size, batch, repeats))
    if "input" in what:
        with tempfile.TemporaryDirectory(prefix="pop_tf_bench_") as tmp:
            if not pairs:
                from pop_tf import pipeline
                config = config_lib.resolve("demo", ["synth.num_posts=400"])
                pipeline.run(config, tmp, until="pairs")
                pairs = os.path.join(tmp, "pairs")
            with open(os.path.join(pairs, "stats.json")) as f:
                stored = json.load(f)["image_size"]
            print(f"bench: input pipeline from {pairs} …", file=sys.stderr)
            results["input_pipeline"] = bench_input(pairs, stored, size, batch, repeats)
    return report


def _print_tf(report: dict) -> None:
    results = report["results"]
    print(f"\nTensorFlow benchmarks: {report['backbone']} at {report['size']}², batch {report['batch']}, "
          f"median of {report['repeats']}, {report['cpu_count']} CPUs, jit_compile={report['jit_compile']}")
    print(f"  float32 matmul 4096²      {results['matmul']['gflops']:8.1f} GFLOP/s (this run's peak)")
    if "ranker_train_step" in results:
        row = results["ranker_train_step"]
        print(f"  ranker train step         {row['images_per_s']:8.2f} images/s  {row['achieved_gflops']:.1f} GFLOP/s "
              f"= {row['peak_fraction']:.0%} of peak  ({row['gflop_per_step']:.1f} GFLOP/step, median "
              f"{row['median_s']:.3f}s, min {row['min_s']:.3f}s, max {row['max_s']:.3f}s)")
    for name in ("keras_in_process", "saved_model_score"):
        if name in results:
            row = results[name]
            ratio = f"  ×{row['ratio_to_keras']:.2f} of Keras" if "ratio_to_keras" in row else ""
            print(f"  {name:25s} {row['images_per_s']:8.2f} images/s (median {row['median_s']:.3f}s){ratio}")
    if "input_pipeline" in results:
        row = results["input_pipeline"]
        print(f"  input pipeline            {row['pairs_per_s']:8.1f} pairs/s ({row['batches_per_s']:.1f} batches/s)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pop-tf bench", description=__doc__.splitlines()[0])
    parser.add_argument("--what", default="ingest",
                        help="comma-separated: ingest, or any of ranker, serving, input (matmul always runs)")
    parser.add_argument("--backbone", default="resnet50", choices=["resnet50", "small"])
    parser.add_argument("--batch", type=int, default=8, help="pairs per ranker step / images per serving call")
    parser.add_argument("--jit", action="store_true", help="XLA-compile the ranker train step")
    parser.add_argument("--pairs", help="a pairs output folder for --what input (default: a small synthetic one)")
    parser.add_argument("--num-images", type=int, default=300)
    parser.add_argument("--size", type=int, default=None, help="image size (ingest output 256, models 224)")
    parser.add_argument("--source-size", type=int, default=512, help="size of the synthetic source images")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    what = [w.strip() for w in args.what.split(",") if w.strip()]
    unknown = set(what) - {"ingest", "ranker", "serving", "input", "matmul"}
    if unknown or ("ingest" in what and len(what) > 1):
        parser.error(f"--what: {', '.join(sorted(unknown)) or 'ingest'} — use ingest alone, or any of "
                     "ranker, serving, input, matmul")
    if what != ["ingest"]:
        report = bench_tf(what, args.backbone, args.size or 224, args.batch, args.repeats, args.jit, args.pairs)
        _print_tf(report)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2)
        return 0
    args.size = args.size or 256
    report = bench_ingest(args.num_images, args.size, args.source_size, args.repeats)
    print(f"\ningest benchmark: {report['num_images']} posts, {report['source_size']}px sources → "
          f"{report['image_size']}px, median of {report['repeats']}, {report['cpu_count']} CPUs")
    for name, row in report["results"].items():
        ratio = f"  ×{row['ratio_to_plain']:.2f} of plain" if "ratio_to_plain" in row else ""
        print(f"  {name:18s} {row['images_per_s']:7.1f} images/s  "
              f"(median {row['median_s']:.2f}s, min {row['min_s']:.2f}s, max {row['max_s']:.2f}s){ratio}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
