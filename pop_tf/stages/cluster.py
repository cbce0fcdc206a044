"""Cluster stage: EfficientNet-B0 features, seeded k-means and per-cluster statistics (Suzuki et al.).

    ingest's train-*/test-*.tfrecord.gz ─ tf.data: parse, batch ─ ClusterFeatures (49-d at 224²)
      ─ features of every post (only the features stay in memory, never the images)
      ─ fit_clusters on the TRAIN split ─ assign train and test to the nearest centre
      ─ features.npz, assignments.csv, clusters.npz/json, contact_sheet.png, saved_model/

Outputs in `cluster.output` (written into a staging folder, then installed together):
- `features.npz`: `post_id` [N] str, `split` [N] str, `features` float32 [N, d] (train, then test).
- `assignments.csv`: `post_id,split,cluster`, one row per ingested post (an id a spreadsheet
  would run as a formula starts with a `'`, `records.csv_cell`; `models.clusterer.read_assignments` undoes it).
- `clusters.npz`: `pop_tf.models.clusterer.ClusterStats` (μ_i, Σ_i, masks, inverses, shares; no
  pickle); the translator's L_d / L_m losses and its test-time cluster draw read it.
- `clusters.json`: the statistics' summary, per-split cluster counts, the data fingerprint and
  the resolved config.
- `contact_sheet.png`: the paper's Fig. 6, one row per cluster (cluster 0, the largest, on top):
  up to `examples_per_cluster` training images closest to the centre, after a label tile.
- `feature_extractor.weights.h5`: the exact extractor weights (the translator's E loads them).
- `saved_model/`: the clusterer SavedModel (`embed`, `assign`, `pop_tf.json`; docs/savedmodels.md, Clusterer).
- `config.json`: the resolved `cluster` section.

`distribute` (`pop_tf.distribution`) embeds each batch over the replicas of that `tf.distribute`
strategy (`distributed_embed`); k-means and the statistics run once, on the host. Under
`multi_worker` every worker reads every image and only the chief writes the outputs.

The data fingerprint is a sha256 over the sorted digests of the training records, so it names
the training data whatever the shard layout.
"""

import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
import sys
import time

import numpy as np

from pop_tf import config as config_lib
from pop_tf import layout, records
from pop_tf.errors import PopTfError
from pop_tf.layout import ASSIGNMENTS, CLUSTERS_NPZ, CONFIG, EXTRACTOR_WEIGHTS, SPLITS
from pop_tf.paths import check_stage
from pop_tf.stages.staging import install, make_staging, stage_run

log = logging.getLogger(__name__)

STAGE = "cluster"
FEATURES = "features.npz"
CLUSTERS_JSON = "clusters.json"
CONTACT_SHEET = "contact_sheet.png"
SAVED_MODEL = "saved_model"
# The feature extractor's exact weights: the translator's L_d/L_m must measure G's images with the
# network that made the cluster statistics (with weights=none it is a seeded random network).
OWNED_FILES = (FEATURES, ASSIGNMENTS, CLUSTERS_NPZ, CLUSTERS_JSON, CONTACT_SHEET, CONFIG, EXTRACTOR_WEIGHTS,
               SAVED_MODEL)
# Contact sheet layout: square tiles of the ingested image size (at most SHEET_MAX_TILE pixels),
# SHEET_GAP pixels of white after every row and tile; the first tile of a row is its label.
SHEET_MAX_TILE = 128
SHEET_GAP = 4
PROGRESS_EVERY = 10  # batches between progress lines


class ClusterStageError(PopTfError):
    """The cluster stage cannot run on its input or options."""


def _image_size(shards: dict) -> int:
    """The ingested image size, read from the first record (every record states its own)."""
    for split in SPLITS:
        for path in shards[split]:
            for serialized in records.iter_serialized(path):
                return int(records.decode_post(serialized)["image_size"])
    raise ClusterStageError(f"the ingest shards {shards['train']} hold no records")


def embed_split(embed, dims: int, paths, image_size: int, batch_size: int, split: str):
    """(post_ids, features float32 [n, d], record digests) of one split, streamed in batches.

    `embed` maps uint8 [B, S, S, 3] to [B, dims] (a traced `ClusterFeatures`).

    tf.data reads and decodes the next batch while the model embeds this one; only the features
    of finished batches are kept, so memory grows with N·d, not with the images.
    """
    import tensorflow as tf

    if not paths:
        return [], np.zeros((0, dims), np.float32), []

    def parse(serialized):
        post = records.parse_post(serialized, image_size)
        return post["image"], post["post_id"], serialized

    dataset = (tf.data.TFRecordDataset(paths, compression_type="GZIP")
               .map(parse, num_parallel_calls=tf.data.AUTOTUNE)
               .batch(batch_size)
               .prefetch(1))
    post_ids, chunks, digests = [], [], []
    for step, (images, ids, serialized) in enumerate(dataset, start=1):
        chunks.append(embed(images).numpy())
        post_ids.extend(i.decode("utf-8") for i in ids.numpy())
        digests.extend(hashlib.sha256(s).hexdigest() for s in serialized.numpy())
        if step % PROGRESS_EVERY == 0:
            log.info(f"cluster: embedded {len(post_ids)} {split} images")
    log.info(f"cluster: embedded {len(post_ids)} {split} images (done)")
    return post_ids, np.concatenate(chunks, axis=0).astype(np.float32), digests


def data_fingerprint(digests) -> str:
    """sha256 of the sorted record digests: independent of shard layout and record order."""
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()


def choose_examples(features: np.ndarray, labels: np.ndarray, centers: np.ndarray, count: int) -> list:
    """Per cluster, the indices of up to `count` members closest to its centre (nearest first)."""
    chosen = []
    for i in range(len(centers)):
        members = np.flatnonzero(labels == i)
        distances = ((features[members].astype(np.float64) - centers[i]) ** 2).sum(axis=1)
        chosen.append(members[np.argsort(distances, kind="stable")[:count]].tolist())
    return chosen


def _load_images(paths, wanted: set) -> dict:
    """{post_id: uint8 [S, S, 3]} for the wanted posts only (a second, cheap pass over the shards)."""
    from PIL import Image

    found = {}
    for path in paths:
        for serialized in records.iter_serialized(path):
            post = records.decode_post(serialized)
            if post["post_id"] in wanted:
                with Image.open(io.BytesIO(post["image_png"])) as image:
                    found[post["post_id"]] = np.asarray(image.convert("RGB"))
    return found


def sheet_tile(image_size: int) -> int:
    return min(int(image_size), SHEET_MAX_TILE)


def contact_sheet(rows, labels, tile: int, columns: int):
    """A PIL image: one row per cluster, a label tile then up to `columns` image tiles.

    Its height is len(rows) × (tile + SHEET_GAP) and its width (columns + 1) × (tile + SHEET_GAP).
    """
    from PIL import Image, ImageDraw

    step = tile + SHEET_GAP
    sheet = Image.new("RGB", ((columns + 1) * step, len(rows) * step), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (images, label) in enumerate(zip(rows, labels)):
        y = r * step
        draw.rectangle([0, y, tile - 1, y + tile - 1], fill=(235, 235, 235))
        for k, line in enumerate(label.split("\n")):
            draw.text((2, y + 1 + 10 * k), line, fill="black")
        for c, pixels in enumerate(images[:columns]):
            tile_image = Image.fromarray(pixels)
            if tile_image.size != (tile, tile):
                tile_image = tile_image.resize((tile, tile), Image.Resampling.LANCZOS)
            sheet.paste(tile_image, ((c + 1) * step, y))
    return sheet


def _write_features(path: str, post_ids, splits, features) -> None:
    # Fixed-width unicode arrays, not object arrays: the file loads with allow_pickle=False.
    np.savez(path, post_id=np.asarray(post_ids, dtype=str), split=np.asarray(splits, dtype=str),
             features=features.astype(np.float32))


def _write_assignments(path: str, post_ids, splits, labels) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["post_id", "split", "cluster"])
        for row in zip(post_ids, splits, labels):
            writer.writerow([records.csv_cell(row[0]), row[1], int(row[2])])


@stage_run
def run(cfg: config_lib.ClusterConfig) -> dict:
    """Runs the cluster stage; returns the artifact paths. Raises a PopTfError with a sentence."""
    from pop_tf import precision

    if not cfg.input:
        raise ClusterStageError("cluster needs an ingest output folder (--input or cluster.input)")
    if not cfg.output:
        raise ClusterStageError("cluster needs an output folder (--output or cluster.output)")
    check_stage(STAGE, cfg)
    cfg = dataclasses.replace(cfg, mixed_precision=precision.resolve(cfg.mixed_precision))
    output = os.path.abspath(cfg.output)
    import tensorflow as tf

    shards = layout.find_shards(cfg.input, tf.io.gfile.glob)
    if not shards["train"]:
        raise ClusterStageError(
            f"no training records (train-*.tfrecord.gz) in '{cfg.input}'; run `pop-tf ingest --output {cfg.input}` "
            "first or point cluster.input at an ingest output folder")
    image_size = _image_size(shards)
    started = time.monotonic()
    log.info(f"cluster: {sum(map(len, shards.values()))} ingest shards in {cfg.input} → {output} "
             f"(EfficientNet-B0 at {cfg.feature_size}², weights {cfg.weights}, k={cfg.num_clusters}, "
             f"seed {cfg.seed})")

    from pop_tf import distribution

    strategy = distribution.make_strategy(cfg.distribute, STAGE)
    with distribution.worker_output(output, strategy, STAGE) as written:
        return _embed_and_cluster(cfg, strategy, written, shards, image_size, started)


def distributed_embed(model, image_size: int, strategy):
    """uint8 [B, S, S, 3] → float [B, d]: `model` traced once for both splits (the batch dimension
    open for the last batch); over R replicas, each embeds its slice of the batch and the slices
    come back in order."""
    import tensorflow as tf

    traced = tf.function(lambda images: model(images, training=False),
                         input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.uint8)])
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return traced

    def embed(images):
        size = -(-int(images.shape[0]) // replicas)
        parts = strategy.experimental_distribute_values_from_function(
            lambda context: images[context.replica_id_in_sync_group * size:(context.replica_id_in_sync_group + 1) * size])
        return strategy.gather(strategy.run(traced, args=(parts,)), axis=0)

    return embed


def _embed_and_cluster(cfg, strategy, output: str, shards: dict, image_size: int, started: float) -> dict:
    import keras

    from pop_tf import precision, serving
    from pop_tf.models import clusterer

    keras.utils.set_random_seed(cfg.seed)  # weights=none: the same random extractor for a seed
    with precision.policy(cfg.mixed_precision), strategy.scope():
        model = clusterer.ClusterFeatures(weights=cfg.weights, feature_size=cfg.feature_size)
    embed = distributed_embed(model, image_size, strategy)
    embedded = {split: embed_split(embed, model.dims, shards[split], image_size, cfg.batch_size, split)
                for split in SPLITS}
    train_ids, train_features, train_digests = embedded["train"]
    stats = clusterer.fit_clusters(train_features, cfg.num_clusters, cfg.seed, cfg.covariance_epsilon)
    log.info(f"cluster: k-means done: {stats.num_clusters} clusters of sizes {stats.sizes.tolist()} "
             f"({len(stats.reduced)} use the n−1 feature rule)")

    post_ids = [pid for split in SPLITS for pid in embedded[split][0]]
    splits = [split for split in SPLITS for _ in embedded[split][0]]
    features = np.concatenate([embedded[split][1] for split in SPLITS], axis=0)
    labels = clusterer.assign(features, stats)
    fingerprint = data_fingerprint(train_digests)

    staging = make_staging(output)
    _write_features(os.path.join(staging, FEATURES), post_ids, splits, features)
    _write_assignments(os.path.join(staging, ASSIGNMENTS), post_ids, splits, labels)
    stats.save(os.path.join(staging, CLUSTERS_NPZ))
    model.save_weights(os.path.join(staging, EXTRACTOR_WEIGHTS))

    train_labels = labels[:len(train_ids)]
    examples = choose_examples(train_features, train_labels, stats.centers, cfg.examples_per_cluster)
    wanted = {train_ids[i] for row in examples for i in row}
    pixels = _load_images(shards["train"], wanted) if wanted else {}
    tile = sheet_tile(image_size)
    sheet_labels = [f"#{i}\nn={int(n)}\n{share:.0%}" for i, (n, share) in enumerate(zip(stats.sizes, stats.shares))]
    sheet = contact_sheet([[pixels[train_ids[i]] for i in row] for row in examples], sheet_labels, tile,
                          cfg.examples_per_cluster)
    sheet.save(os.path.join(staging, CONTACT_SHEET))

    per_split = {split: np.bincount(labels[np.asarray(splits) == split], minlength=stats.num_clusters).tolist()
                 for split in SPLITS}
    summary = {
        "summary": stats.summary(),
        "counts": {split: len(embedded[split][0]) for split in SPLITS},
        "per_split_sizes": per_split,
        "examples": [[train_ids[i] for i in row] for row in examples],
        "contact_sheet": {"rows": stats.num_clusters, "tile": tile, "gap": SHEET_GAP},
        "image_size": image_size,
        "feature_size": cfg.feature_size,
        "data_fingerprint": fingerprint,
        "input": cfg.input,
        "config": config_lib.to_dict(cfg),
        "seconds": round(time.monotonic() - started, 2),
    }
    with open(os.path.join(staging, CLUSTERS_JSON), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write("\n")
    config_lib.write_resolved(cfg, staging, CONFIG)
    serving.export_clusterer(model, stats, os.path.join(staging, SAVED_MODEL), config_lib.to_dict(cfg), fingerprint)

    install(staging, output, owned_names=OWNED_FILES, owner=STAGE)
    log.info(f"cluster: done in {time.monotonic() - started:.1f}s: {len(train_ids)} train and "
             f"{len(embedded['test'][0])} test posts in {stats.num_clusters} clusters, shares "
             f"{[round(float(s), 3) for s in stats.shares]}")
    return {
        "output": output,
        "features": os.path.join(output, FEATURES),
        "assignments": os.path.join(output, ASSIGNMENTS),
        "clusters": os.path.join(output, CLUSTERS_NPZ),
        "clusters_json": os.path.join(output, CLUSTERS_JSON),
        "contact_sheet": os.path.join(output, CONTACT_SHEET),
        "saved_model": os.path.join(output, SAVED_MODEL),
        "config": os.path.join(output, CONFIG),
        "extractor_weights": os.path.join(output, EXTRACTOR_WEIGHTS),
    }


def main(argv=None) -> int:
    """`python -m pop_tf.train clusterer --workdir W [--preset P] [--set k=v] [--dry-run]`."""
    from pop_tf import train
    return train.run_trainer(argv, "clusterer", STAGE, run)


if __name__ == "__main__":
    sys.exit(main())
