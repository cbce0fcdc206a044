"""The `score` stage: score every ingested image with the ranker SavedModel and label domains.

Pass 1 streams the ingest records through tf.data in batches and calls the SavedModel's `score`
endpoint — the very graph other apps load, so pipeline scores and served scores cannot drift.
The thresholds come from the training split's scores (quantiles, or one fixed threshold). Pass 2
re-reads the records and writes each with its score and popularity domain (`popular`,
`unpopular`, or empty for the undecided middle) for the translator. Only ids and scores are held
in memory, never images.

Why batched tf.data and not Beam RunInference: scoring is one TensorFlow graph over batches,
which on one machine already uses every core through TF's own thread pools; Beam worker
processes would each load the model and split the cores between them, and the domain thresholds
need all training scores before any record can be labelled (a second pass either way). A user who
outgrows one machine can call the same `score` endpoint from a `ModelHandler` over
`tf.saved_model.load` in Beam (Beam's `TFModelHandler*` loads only `.keras` files under Keras 3).

Outputs in the output folder: `train-*`/`test-*.tfrecord.gz` (scored post records, one shard per
ingest shard), `scores.csv` (post_id, split, score, domain, likes, followers; an id a
spreadsheet would run as a formula starts with a `'`, `records.csv_cell`, and `read_scores`
gives it back), `stats.json` (counts per split and domain, thresholds, score summary), `config.json`.
"""

import csv
import json
import logging
import os
import time

from pop_tf import config as config_lib
from pop_tf import layout, records
from pop_tf.errors import PopTfError
from pop_tf.layout import CONFIG, SPLITS, STATS
from pop_tf.paths import check_stage
from pop_tf.stages.staging import install, make_staging, stage_run

log = logging.getLogger(__name__)

STAGE = "score"
SCORES = "scores.csv"


class ScoreError(PopTfError):
    """Missing inputs, a model of the wrong kind, or outputs that fail the accounting check."""


def thresholds(train_scores, cfg: config_lib.ScoreConfig) -> tuple:
    """(unpopular at or below, popular at or above) from the training scores or `threshold`."""
    import numpy as np

    if cfg.threshold is not None:
        return float(cfg.threshold), float(cfg.threshold)
    if cfg.unpopular_quantile > cfg.popular_quantile:
        raise config_lib.ConfigError(
            f"config key 'score.unpopular_quantile' ({cfg.unpopular_quantile}) must not exceed "
            f"'score.popular_quantile' ({cfg.popular_quantile})")
    if len(train_scores) == 0:
        raise ScoreError("the ingest output has no training images to set the domain thresholds from")
    low, high = np.quantile(np.asarray(train_scores, dtype=np.float64), [cfg.unpopular_quantile, cfg.popular_quantile])
    return float(low), float(high)


def domain_of(score: float, low: float, high: float) -> str:
    """`popular` at or above `high`, `unpopular` at or below `low` (below `high` when they meet)."""
    if score >= high:
        return "popular"
    if score <= low:
        return "unpopular"
    return ""


def _score_all(model, input_dir: str, stored_size: int, batch_size: int) -> dict:
    import tensorflow as tf

    from pop_tf import data

    scores = {split: {} for split in SPLITS}
    for split in SPLITS:
        pattern = layout.shard_pattern(input_dir, split)
        if not tf.io.gfile.glob(pattern):
            continue
        for batch in data.post_dataset(pattern, stored_size, batch_size):
            batch_scores = model.score(batch["image"])["score"].numpy()
            for post_id, score in zip(batch["post_id"].numpy(), batch_scores):
                scores[split][post_id.decode("utf-8")] = float(score)
        log.info(f"score: {len(scores[split])} {split} images scored")
    return scores


def read_scores(score_dir: str) -> list:
    """The rows of a score output folder's scores.csv as dicts of strings, post ids as ingested."""
    with open(os.path.join(score_dir, SCORES), newline="", encoding="utf-8") as f:
        return [{**row, "post_id": records.from_csv_cell(row["post_id"])} for row in csv.DictReader(f)]


@stage_run
def run(cfg: config_lib.ScoreConfig) -> dict:
    """Scores every ingested image and writes scored records; returns the artifact paths."""
    if not cfg.input or not cfg.model or not cfg.output:
        raise config_lib.ConfigError("score needs 'score.input' (an ingest folder), 'score.model' (a ranker "
                                     "SavedModel) and 'score.output'")
    check_stage(STAGE, cfg)
    try:
        with open(os.path.join(cfg.input, STATS)) as f:
            ingest_stats = json.load(f)
    except OSError:
        raise ScoreError(f"{cfg.input} is not an ingest output folder (no {STATS}); run `pop-tf ingest` "
                         "first") from None
    from pop_tf import serving

    serving.read_model_card(cfg.model, expected_kind="ranker")
    import numpy as np
    import tensorflow as tf

    started = time.monotonic()
    model = tf.saved_model.load(cfg.model)
    stored_size = int(ingest_stats["image_size"])
    scores = _score_all(model, cfg.input, stored_size, cfg.batch_size)
    low, high = thresholds(list(scores["train"].values()), cfg)

    staging = make_staging(cfg.output)
    counts = {split: {"popular": 0, "unpopular": 0, "undecided": 0} for split in SPLITS}
    with open(os.path.join(staging, SCORES), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["post_id", "split", "score", "domain", "likes", "followers"])
        for path in sorted(tf.io.gfile.glob(os.path.join(cfg.input, "*-*.tfrecord.gz"))):
            name = os.path.basename(path)
            split = name.split("-", 1)[0]
            if split not in SPLITS:
                continue
            options = tf.io.TFRecordOptions(compression_type="GZIP")
            with tf.io.TFRecordWriter(os.path.join(staging, name), options) as out:
                for serialized in records.iter_serialized(path):
                    post = records.decode_post(serialized)
                    score = scores[split].get(post["post_id"])
                    if score is None:
                        raise ScoreError(f"post {post['post_id']} in {path} was not scored; the input changed "
                                         "while scoring, rerun the stage")
                    domain = domain_of(score, low, high)
                    out.write(records.add_score(serialized, score, domain))
                    counts[split][domain or "undecided"] += 1
                    writer.writerow([records.csv_cell(post["post_id"]), split, f"{score:.6f}", domain,
                                     post["likes"], "" if post["followers"] is None else post["followers"]])
    for split in SPLITS:
        written, expected = sum(counts[split].values()), int(ingest_stats["per_split"].get(split, 0))
        if written != expected:
            raise ScoreError(f"{written} {split} records were scored but ingest accepted {expected}; the ingest "
                             f"output in {cfg.input} is incomplete or changed, rerun ingest")
    all_scores = np.asarray([s for split in SPLITS for s in scores[split].values()])
    stats = {"counts": counts, "thresholds": {"unpopular_at_or_below": low, "popular_at_or_above": high},
             "score": {"mean": float(all_scores.mean()), "std": float(all_scores.std()),
                       "min": float(all_scores.min()), "max": float(all_scores.max())},
             "model": os.path.abspath(cfg.model), "input": os.path.abspath(cfg.input), "image_size": stored_size,
             "seconds": round(time.monotonic() - started, 1)}
    with open(os.path.join(staging, STATS), "w") as f:
        json.dump(stats, f, indent=2, sort_keys=True)
    config_lib.write_resolved(cfg, staging)
    install(staging, cfg.output, owned_prefixes=tuple(f"{s}-" for s in SPLITS),
            owned_names=(SCORES, STATS, CONFIG), owner=STAGE)
    log.info(f"score: {sum(sum(c.values()) for c in counts.values())} images; train: {counts['train']}; "
             f"thresholds {low:.3f} / {high:.3f}")
    return {"records": os.path.join(cfg.output, "*-*.tfrecord.gz"), "scores": os.path.join(cfg.output, SCORES),
            "stats": os.path.join(cfg.output, STATS), "config": os.path.join(cfg.output, CONFIG)}
