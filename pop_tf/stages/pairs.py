"""Pairs stage: a Beam pipeline from ingested posts to popularity-discriminable image pairs.

    ingest's train-*/test-*.tfrecord.gz ─ ReadAllFromTFRecord ─ decode ─ key by (split, user) ─
      GroupByKey ─ candidate pairs, capped seeded selection (pop_tf.beam.pairing) ─
      encode both images ─ train_pairs-*.tfrecord.gz / test_pairs-*.tfrecord.gz

Pairs are built within each split: train pairs only from train posts, held-out test pairs only
from test posts, so the ranker's test accuracy is measured on images it never saw. The rule and
the fair, seeded choice of pairs are documented in `pop_tf.beam.pairing`.

The job reads the shards with Beam's `ReadAllFromTFRecord` over `Create([paths])` (no
TensorFlow on the workers; it works on every runner, Dask included), writes through pop_tf's own
sinks (`pop_tf.beam.sinks`) into a staging folder, counts what it wrote from the output files
themselves, checks those counts against what the pipeline says it produced (a sink that silently
loses records fails the job) and against ingest's own stats, and only then moves the outputs into
place.

`stats.json` (each count per split, `{"train": …, "test": …}`): `pairs`, `posts` (read from the
ingest output), `posts_in_pairs` (posts in at least one pair), `posts_without_user` and
`posts_without_date` (posts that cannot pair), `users` (users with at least one post that can
pair), `candidate_pairs` (pairs the rule allows, before the per-image cap), `pairs_per_user`
(min/median/max over users with pairs, and `per_user`), `max_pairs_per_image` (never above the
cap), `images_at_cap`, `margin_histogram` (fixed bins of `bin_width`), plus `image_size`, `input`,
the resolved `config`, `format_version` and `seconds`. Pair counts come from the written files.
"""

import collections
import json
import math
import os
import statistics
import sys
import time

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import ReadAllFromTFRecord
from apache_beam.metrics import Metrics

from pop_tf import config as config_lib
from pop_tf import layout, records
from pop_tf.beam import branches, files, pairing, sinks
from pop_tf.beam.branches import OK
from pop_tf.beam.options import close_runner, pipeline_options, runner_name, source_splits
from pop_tf.errors import PopTfError
from pop_tf.layout import CONFIG, PAIR_PREFIXES, SPLITS, STATS
from pop_tf.paths import check_stage
from pop_tf.stages.staging import install, is_remote, make_staging, stage_run

STAGE = "pairs"
NAMESPACE = "pop_tf.pairs"
# Counts the pipeline reports about itself, written next to the staged outputs and read back
# by the driver: Beam metrics are not reported by every runner, files are.
SUMMARY = "_summary"
SUMMARY_TAG = "summary"
# With pairs.num_shards = 0: one shard per this many posts of the ingest output (about as many pairs).
RECORDS_PER_SHARD = 500
# Margin histogram: fixed bins, so the histograms of two runs or datasets can be compared bin by
# bin; margins of 5 and more (a factor e^5 ≈ 150 in normalised likes) share the last bin.
MARGIN_BIN_WIDTH = 0.25
MARGIN_BINS = 20


class PairsError(PopTfError):
    """The job could not run, or its outputs failed the accounting check."""


def with_split(path_and_serialized):
    """(split, serialized post) of a record read by `ReadAllFromTFRecord`; the split is the file name's."""
    path, serialized = path_and_serialized
    name = FileSystems.split(path)[1]
    return next(split for split in SPLITS if name.startswith(f"{split}-")), serialized


def _summary(split: str, name: str, count: int = 1):
    return SUMMARY_TAG, ((split, name), count)


def key_by_user(split_and_serialized):
    """((split, user_id), post) for posts that can pair; summary counts for every post.

    Only the fields a pair needs travel through the shuffle (not the edge map, caption, ...). A
    post that cannot pair is counted under its first missing field: no user, then no date.
    """
    split, serialized = split_and_serialized
    post = records.decode_post(serialized)
    Metrics.counter(NAMESPACE, "posts_read").inc()
    yield _summary(split, "posts")
    if not post["user_id"]:
        yield _summary(split, "posts_without_user")
        return
    if post["posted_at_unix"] is None:
        yield _summary(split, "posts_without_date")
        return
    keep = ("post_id", "user_id", "likes", "followers", "posted_at_unix", "image_png", "image_size")
    yield branches.ok(((split, post["user_id"]), {name: post[name] for name in keep}))


def pair_user_posts(key_and_posts, window_days: float, min_log_margin: float,
                    max_pairs_per_image: int, seed: int):
    """(split, (post id A, post id B), encoded pair) for the pairs chosen among one user's posts
    of one split, tagged `ok`, and summary counts.

    The pure functions sort what they are given, so the result does not depend on the order in
    which the runner delivers the group.
    """
    (split, user_id), posts = key_and_posts
    by_id = {post["post_id"]: post for post in posts}
    candidates = pairing.candidate_pairs(by_id.values(), window_days, min_log_margin)
    chosen = pairing.select_pairs(candidates, max_pairs_per_image, seed)
    yield _summary(split, "users")
    yield _summary(split, "candidate_pairs", len(candidates))
    yield _summary(split, "pairs", len(chosen))
    Metrics.counter(NAMESPACE, "pairs").inc(len(chosen))
    for candidate in chosen:
        a, b = by_id[candidate.post_id_a], by_id[candidate.post_id_b]
        yield branches.ok((split, (a["post_id"], b["post_id"]), records.encode_pair({
            "post_id_a": a["post_id"], "post_id_b": b["post_id"], "user_id": user_id, "split": split,
            "image_png_a": a["image_png"], "image_png_b": b["image_png"],
            "likes_a": a["likes"], "likes_b": b["likes"],
            "followers_a": a["followers"], "followers_b": b["followers"],
            "posted_at_unix_a": a["posted_at_unix"], "posted_at_unix_b": b["posted_at_unix"],
            "image_size": a["image_size"], "margin": candidate.margin,
        })))


def build_pipeline(p, *, shards: dict, staging: str, cfg: config_lib.PairsConfig, num_shards: int = 1):
    """Adds the pairs transforms to pipeline `p`; outputs land in `staging` as `num_shards`
    shards per split. Shards are read by Beam's `ReadAllFromTFRecord`, so workers never import
    TensorFlow."""
    paths = [path for split in SPLITS for path in shards[split]]
    keyed = branches.split(
        p
        | "ShardPaths" >> beam.Create(paths)
        | "ReadShards" >> ReadAllFromTFRecord(compression_type=CompressionTypes.GZIP, with_filename=True)
        | "WithSplit" >> beam.Map(with_split)
        | "Distribute" >> beam.Reshuffle()
        | "KeyByUser" >> beam.FlatMap(key_by_user),
        "Keyed", (OK, SUMMARY_TAG))
    paired = branches.split(
        keyed[OK]
        | "GroupByUser" >> beam.GroupByKey()
        | "PairUserPosts" >> beam.FlatMap(
            pair_user_posts, cfg.window_days, cfg.min_log_margin, cfg.max_pairs_per_image, cfg.seed),
        "Paired", (OK, SUMMARY_TAG))
    written_pairs = (paired[OK]
                     | "WithPrefix" >> beam.Map(lambda item: (PAIR_PREFIXES[item[0]], item[1], item[2]))
                     | "WritePairs" >> sinks.WriteShards(staging, PAIR_PREFIXES.values(), num_shards,
                                                         layout.SHARD_SUFFIX))
    written_summary = (
        (keyed[SUMMARY_TAG], paired[SUMMARY_TAG])
        | "AllSummaries" >> beam.Flatten()
        | "SumSummaries" >> beam.CombinePerKey(sum)
        | "SummaryJson" >> beam.Map(
            lambda item: (item[0], json.dumps({"split": item[0][0], "name": item[0][1], "count": item[1]})))
        | "WriteSummary" >> sinks.WriteLines(staging, SUMMARY + ".jsonl"))
    return sinks.finish([written_pairs, written_summary])


def _read_summary(staging: str) -> dict:
    """{split: {name: count}} from the summary file the pipeline wrote (missing counts are 0)."""
    summary = {split: collections.Counter() for split in SPLITS}
    path = FileSystems.join(staging, SUMMARY + ".jsonl")
    if FileSystems.exists(path):
        for line in files.read_file(path).decode("utf-8").split("\n"):  # JSON lines end at \n only
            if line.strip():
                entry = json.loads(line)
                summary[entry["split"]][entry["name"]] += entry["count"]
    return summary


def margin_bin(margin: float) -> int:
    return min(int(margin // MARGIN_BIN_WIDTH), MARGIN_BINS)


def _bin_label(index: int) -> str:
    low = index * MARGIN_BIN_WIDTH
    return f"[{low:.2f}, inf)" if index == MARGIN_BINS else f"[{low:.2f}, {low + MARGIN_BIN_WIDTH:.2f})"


def _count_outputs(staging: str) -> dict:
    """Per split: pairs, pairs per user and per image, margin bins and image sizes, from the files."""
    counted = {}
    for split in SPLITS:
        per_user, per_image, bins = collections.Counter(), collections.Counter(), collections.Counter()
        sizes = set()
        pattern = layout.pair_shard_pattern(staging, split)
        for serialized in sinks.iter_records(pattern):
            pair = records.decode_pair(serialized)
            per_user[pair["user_id"]] += 1
            per_image[pair["post_id_a"]] += 1
            per_image[pair["post_id_b"]] += 1
            bins[margin_bin(pair["margin"])] += 1
            sizes.add(pair["image_size"])
        counted[split] = dict(pairs=sum(per_user.values()), per_user=per_user, per_image=per_image,
                              bins=bins, sizes=sizes)
    return counted


def _spread(counts) -> dict:
    values = sorted(counts)
    if not values:
        return {"min": None, "median": None, "max": None}
    return {"min": values[0], "median": statistics.median(values), "max": values[-1]}


def _check(counted: dict, summary: dict, ingest_stats: dict, cfg, staging: str) -> None:
    """Raises PairsError when the written files disagree with the pipeline or with ingest."""
    problems = []
    for split in SPLITS:
        written, reported = counted[split]["pairs"], summary[split]["pairs"]
        if written != reported:
            problems.append(f"{written} {split} pairs in the files but the pipeline produced {reported}")
        most = max(counted[split]["per_image"].values(), default=0)
        if most > cfg.max_pairs_per_image:
            problems.append(f"an image is in {most} {split} pairs, more than pairs.max_pairs_per_image="
                            f"{cfg.max_pairs_per_image}")
        expected = (ingest_stats.get("per_split") or {}).get(split)
        if expected is not None and expected != summary[split]["posts"]:
            problems.append(f"{summary[split]['posts']} {split} posts read but ingest's stats.json lists {expected}")
    sizes = set().union(*(counted[split]["sizes"] for split in SPLITS))
    if len(sizes) > 1:
        problems.append(f"the ingest output mixes image sizes {sorted(sizes)}")
    if problems:
        raise PairsError(f"accounting check failed: {'; '.join(problems)}; the outputs were left in "
                         f"{staging} for inspection and nothing was installed")


def _read_ingest_stats(folder: str) -> dict:
    """Ingest's stats.json, or {} when the folder has none (a hand-made or older ingest output)."""
    path = FileSystems.join(folder, STATS)
    if not FileSystems.exists(path):
        return {}
    try:
        return json.loads(files.read_file(path))
    except ValueError:
        raise PairsError(f"ingest stats file '{path}' is not valid JSON") from None


@stage_run
def run(cfg: config_lib.PairsConfig, beam_args=()) -> dict:
    """Runs the pairs job; returns the artifact paths. Raises PairsError with a sentence."""
    if not cfg.input:
        raise PairsError("pairs needs an ingest output folder (--input or pairs.input)")
    if not cfg.output:
        raise PairsError("pairs needs an output folder (--output or pairs.output)")
    options = pipeline_options(beam_args, cfg.runner)  # option typos fail before anything is written
    check_stage(STAGE, cfg)
    output = cfg.output if is_remote(cfg.output) else os.path.abspath(cfg.output)
    shards = layout.find_shards(cfg.input, files.glob)
    if not any(shards.values()):
        raise PairsError(
            f"no ingest output (train-*.tfrecord.gz or test-*.tfrecord.gz) in '{cfg.input}'; "
            f"run `pop-tf ingest --output {cfg.input}` first or point --input at an ingest output folder")
    ingest_stats = _read_ingest_stats(cfg.input)
    staging = make_staging(output)
    posts = sum((ingest_stats.get("per_split") or {}).values()) or sum(map(len, shards.values()))
    num_shards = cfg.num_shards or max(1, math.ceil(posts / RECORDS_PER_SHARD))
    source_splits(options, sum(map(len, shards.values())))  # on Dask: one partition per shard read

    started = time.monotonic()
    print(f"pairs: {sum(map(len, shards.values()))} ingest shards in {cfg.input} → {output} "
          f"(window {cfg.window_days:g} days, margin ≥ {cfg.min_log_margin:g}, ≤ {cfg.max_pairs_per_image} "
          f"pairs per image, seed {cfg.seed}, runner {runner_name(options)})", file=sys.stderr, flush=True)
    with beam.Pipeline(options=options) as p:
        build_pipeline(p, shards=shards, staging=staging, cfg=cfg, num_shards=num_shards)
    close_runner(getattr(p, "result", None))
    sinks.remove_temporary(staging)

    summary = _read_summary(staging)
    counted = _count_outputs(staging)
    _check(counted, summary, ingest_stats, cfg, staging)
    FileSystems.delete([FileSystems.join(staging, SUMMARY + ".jsonl")])
    sizes = set().union(*(counted[split]["sizes"] for split in SPLITS))
    stats = {
        "pairs": {s: counted[s]["pairs"] for s in SPLITS},
        "posts": {s: summary[s]["posts"] for s in SPLITS},
        "posts_in_pairs": {s: len(counted[s]["per_image"]) for s in SPLITS},
        "posts_without_user": {s: summary[s]["posts_without_user"] for s in SPLITS},
        "posts_without_date": {s: summary[s]["posts_without_date"] for s in SPLITS},
        "users": {s: summary[s]["users"] for s in SPLITS},
        "candidate_pairs": {s: summary[s]["candidate_pairs"] for s in SPLITS},
        "pairs_per_user": {s: {**_spread(counted[s]["per_user"].values()),
                               "per_user": dict(sorted(counted[s]["per_user"].items()))} for s in SPLITS},
        "max_pairs_per_image": {s: max(counted[s]["per_image"].values(), default=0) for s in SPLITS},
        "images_at_cap": {s: sum(1 for n in counted[s]["per_image"].values() if n == cfg.max_pairs_per_image)
                          for s in SPLITS},
        "margin_histogram": {
            "bin_width": MARGIN_BIN_WIDTH,
            **{s: {_bin_label(i): counted[s]["bins"][i] for i in range(MARGIN_BINS + 1)} for s in SPLITS}},
        "image_size": sizes.pop() if sizes else ingest_stats.get("image_size"),
        "input": cfg.input,
        "config": config_lib.to_dict(cfg),
        "format_version": records.PAIR_FORMAT_VERSION,
        "seconds": round(time.monotonic() - started, 2),
    }
    files.write_json(FileSystems.join(staging, STATS), stats)
    files.write_json(FileSystems.join(staging, CONFIG), config_lib.to_dict(cfg))
    install(staging, output, owned_prefixes=tuple(f"{prefix}-" for prefix in PAIR_PREFIXES.values()),
            owned_names=(STATS, CONFIG), owner=STAGE)
    print(f"pairs: done in {stats['seconds']:.1f}s: {stats['pairs']['train']} train pairs from "
          f"{stats['posts']['train']} posts, {stats['pairs']['test']} test pairs from {stats['posts']['test']} "
          f"posts ({sum(stats['posts_without_user'].values())} posts without user)", file=sys.stderr, flush=True)
    return {
        "output": output,
        **{split: sorted(files.glob(layout.pair_shard_pattern(output, split))) for split in SPLITS},
        "stats": FileSystems.join(output, STATS),
        "config": FileSystems.join(output, CONFIG),
    }
