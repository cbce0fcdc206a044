"""`pop-tf bench`: measured speed figures, printed and optionally written as JSON.

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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pop-tf bench", description=__doc__.splitlines()[0])
    parser.add_argument("--what", default="ingest", choices=["ingest"], help="which benchmark")
    parser.add_argument("--num-images", type=int, default=300)
    parser.add_argument("--size", type=int, default=256, help="ingest output size")
    parser.add_argument("--source-size", type=int, default=512, help="size of the synthetic source images")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
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
