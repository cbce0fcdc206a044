"""Ingest stage: a Beam pipeline from posts (docs/architecture.md) to validated, split GZIP TFRecords.

    metadata ─ read records ─ validate ─ dedupe post_id ─ paper filters ─ read + decode image ─
      pad/resize, edge map, hashes ─ exact and near-duplicate removal ─ split by hash(post_id) ─
      train-*.tfrecord.gz / test-*.tfrecord.gz         (every other record → rejects.jsonl)

Sources and sinks go through Beam's FileSystems layer. The source is `Create([metadata path
parts]) → FlatMap → Reshuffle`, which works on every runner (`ReadFromText` fails on Dask); the
sinks are pop_tf's own (`pop_tf.beam.sinks`), since Beam's lose records on Dask; steps with
several outputs yield `(tag, value)` pairs (`pop_tf.beam.branches`). The job then counts what it
wrote from the output files themselves, checks `accepted + rejected == input records`, and only
then moves the outputs from a staging folder into place, so a killed or miscounted run never
leaves outputs that look complete.
"""

import collections
import datetime
import hashlib
import json
import logging
import math
import os
import sys
import time

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pop_tf import config as config_lib
from pop_tf import layout, records
from pop_tf.beam import branches, images, metadata, reasons, sinks
from pop_tf.beam.branches import OK, REJECTED
from pop_tf.beam import files
from pop_tf.beam.options import close_runner, pipeline_options, runner_name, source_splits
from pop_tf.beam.reasons import Rejected
from pop_tf.errors import PopTfError
from pop_tf.layout import CONFIG, SPLITS, STATS
from pop_tf.paths import check_stage
from pop_tf.stages.staging import install, is_remote, make_staging, stage_run

log = logging.getLogger("pop_tf.ingest")
STAGE = "ingest"
NAMESPACE = "pop_tf.ingest"
REJECTS = "rejects.jsonl"
# With ingest.num_shards = 0: one shard per this many input records (a shard's records are held in
# memory by the task that writes it; 500 posts at 256 px are about 60 MB).
RECORDS_PER_SHARD = 500
# On Dask: the input is read as one part per this many records, at most MAX_SOURCE_PARTS (each
# part's task parses the whole metadata file and keeps its share).
RECORDS_PER_SOURCE_PART = 250
MAX_SOURCE_PARTS = 32


class IngestError(PopTfError):
    """The job could not run, or its outputs failed the accounting check."""


def find_metadata(dataset: str) -> str:
    for name in metadata.METADATA_NAMES:
        path = FileSystems.join(dataset, name)
        if FileSystems.exists(path):
            return path
    raise IngestError(
        f"no {' or '.join(metadata.METADATA_NAMES)} in dataset folder '{dataset}' (see docs/architecture.md)")


def _local_path(path: str):
    """The filesystem path of a local `path` (plain or file://), None for remote object stores."""
    scheme = FileSystems.get_scheme(path)
    if scheme is None:
        return path
    if scheme == "file":
        return path[len("file://"):]
    return None


_METADATA_HINTS = {
    "outside_root": "; the metadata file must be a regular file inside the dataset folder",
    "not_regular": "; the metadata file must be a regular file inside the dataset folder",
    "too_large": "; the whole file is held in memory, so split the dataset into several folders",
}


def read_metadata(path: str, root: str, max_bytes: int) -> bytes:
    """The metadata file's bytes, read like an untrusted image: only a regular file inside the
    dataset root (a symlink to /dev/zero or a FIFO would never end), at most `max_bytes`."""
    local, local_root = _local_path(path), _local_path(root)
    if local is not None and local_root is not None:
        try:
            return images.read_untrusted_file(local, max_bytes, root=local_root,
                                              limit_name="MAX_METADATA_BYTES in pop_tf/beam/metadata.py")
        except images.FileRefused as e:
            raise IngestError(f"metadata file {path} {e.message}{_METADATA_HINTS.get(e.kind, '')}") from None
    # Object stores have no FIFOs, devices or symlinks: only the size needs a bound.
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise IngestError(f"metadata file {path} is larger than the limit of {max_bytes:,} bytes "
                          f"(MAX_METADATA_BYTES in pop_tf/beam/metadata.py){_METADATA_HINTS['too_large']}")
    return data


def split_of(post_id: str, test_ratio: float) -> str:
    """Train or test by a hash of the post id: stable across runs, runners and dataset growth."""
    bucket = int.from_bytes(hashlib.sha256(post_id.encode("utf-8")).digest()[:8], "big") / 2.0**64
    return "test" if bucket < test_ratio else "train"


def _reject(record_or_post, reason: str, message: str) -> dict:
    """A `rejects.jsonl` entry for a RawRecord or a post dict (which carries its source)."""
    Metrics.counter(NAMESPACE, f"rejected.{reason}").inc()
    if isinstance(record_or_post, metadata.RawRecord):
        return metadata.reject_entry(record_or_post, reason, message)
    source = record_or_post["_source"]
    return metadata.reject_entry(metadata.RawRecord(**source), reason, message,
                                 post_id=record_or_post["post_id"])


class ValidateFn(beam.DoFn):
    """RawRecord → (post_id, post) or a tagged reject."""

    def __init__(self, from_csv: bool, now_unix: float):
        self.from_csv = from_csv
        self.now_unix = now_unix

    def process(self, record: metadata.RawRecord):
        Metrics.counter(NAMESPACE, "records_read").inc()
        if record.reason:
            yield branches.rejected(_reject(record, record.reason, record.message))
            return
        now = datetime.datetime.fromtimestamp(self.now_unix, datetime.timezone.utc)
        try:
            post = metadata.validate_record(record.fields, from_csv=self.from_csv, now=now)
        except Rejected as e:
            yield branches.rejected(_reject(record, e.reason, e.message))
            return
        except Exception as e:  # noqa: BLE001 - one record must never abort the job; this is a bug trap
            log.warning("line %d of the metadata could not be validated", record.line, exc_info=True)
            yield branches.rejected(_reject(
                record, reasons.INVALID_FIELD, f"line {record.line} could not be validated ({type(e).__name__})"))
            return
        post["_source"] = {"index": record.index, "line": record.line, "text": record.text}
        yield branches.ok((post["post_id"], post))


def first_by_index(key_and_posts, reason: str, describe):
    """Keeps the post that came first in the input among those sharing a key; rejects the rest."""
    _, posts = key_and_posts
    posts = sorted(posts, key=lambda p: p["_source"]["index"])
    yield branches.ok(posts[0])
    for post in posts[1:]:
        yield branches.rejected(_reject(post, reason, describe(post, posts[0])))


class FilterFn(beam.DoFn):
    def __init__(self, filters: dict):
        self.filters = filters

    def process(self, post):
        try:
            yield branches.ok(metadata.apply_filters(post, **self.filters))
        except Rejected as e:
            yield branches.rejected(_reject(post, e.reason, e.message))


# How each refusal of `images.read_untrusted_file` is reported for an image.
_REFUSED_REASONS = {"outside_root": reasons.UNSAFE_PATH, "missing": reasons.MISSING_FILE,
                    "not_regular": reasons.NOT_AN_IMAGE, "too_large": reasons.FILE_TOO_LARGE,
                    "unreadable": reasons.MISSING_FILE}


class LoadImageFn(beam.DoFn):
    """Reads an image through FileSystems (never outside the root), decodes, resizes, hashes."""

    def __init__(self, root: str, cfg: dict):
        self.root = root
        self.cfg = cfg
        self._decoded = 0
        self._started = None

    def setup(self):
        # Symlinks, FIFOs and devices exist only on a local filesystem; remote object stores
        # have none, and '..' was already refused when the record was validated.
        local = _local_path(self.root)
        self._local_root = os.path.realpath(local) if local is not None else None

    def _read(self, post) -> bytes:
        path = FileSystems.join(self.root, post["image"])
        limit = self.cfg["max_file_bytes"]
        if self._local_root is not None:
            try:
                return images.read_untrusted_file(os.path.join(self._local_root, post["image"]), limit,
                                                  root=self._local_root, limit_name="ingest.max_file_bytes")
            except images.FileRefused as e:
                raise Rejected(_REFUSED_REASONS[e.kind], f"image file '{post['image']}' {e.message}") from None
        if not FileSystems.exists(path):
            raise Rejected(reasons.MISSING_FILE, f"image file '{post['image']}' does not exist")
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                data = f.read(limit + 1)  # one byte more tells "too large" without reading it all
        except (OSError, IOError) as e:
            raise Rejected(reasons.MISSING_FILE, f"image file '{post['image']}' could not be read: {e}") from None
        if len(data) > limit:
            raise Rejected(reasons.FILE_TOO_LARGE,
                           f"image file is larger than the limit of {limit:,} bytes (ingest.max_file_bytes)")
        return data

    def process(self, post):
        try:
            data = self._read(post)
            image = images.decode_image(
                data, max_pixels=self.cfg["max_pixels"], max_file_bytes=self.cfg["max_file_bytes"],
                min_side=self.cfg["min_image_side"], max_aspect=self.cfg["max_aspect_ratio"])
        except Rejected as e:
            yield branches.rejected(_reject(post, e.reason, f"{e.message} ({post['image']})"))
            return
        pixels = images.pad_to_square_and_resize(image, self.cfg["image_size"])
        edges = images.edge_map(pixels, threshold=self.cfg["edge_threshold"])
        post = dict(post)
        post.update(
            image_png=images.encode_png(pixels), edge_png=images.encode_png(edges),
            image_size=self.cfg["image_size"], phash=images.perceptual_hash(pixels),
            pixel_digest=images.pixel_digest(pixels), _colour=images.colour_signature(pixels))
        Metrics.counter(NAMESPACE, "images_decoded").inc()
        self._decoded += 1
        if self._started is None:
            self._started = time.monotonic()
        if self._decoded % 500 == 0:
            rate = self._decoded / max(time.monotonic() - self._started, 1e-9)
            log.info("ingest: %d images decoded by worker %d (%.1f images/s)", self._decoded, os.getpid(), rate)
        yield branches.ok(post)


def near_duplicate_pairs(band_and_members, max_distance: int, colour_tolerance: int):
    """(loser index, (winner index, winner post_id, distance)) for members of one LSH bucket.

    Members are (index, post_id, phash, colour signature). A post loses when a post earlier in
    the input is within `max_distance` hash bits and `colour_tolerance` colour levels of it, so
    the survivor of a group of near-copies is always the first one in the input.
    """
    _, members = band_and_members
    members = sorted(members)
    for j, (index_j, _, hash_j, colour_j) in enumerate(members):
        for index_i, post_id_i, hash_i, colour_i in members[:j]:
            distance = images.hamming_distance(hash_i, hash_j)
            if distance <= max_distance and images.colour_distance(colour_i, colour_j) <= colour_tolerance:
                yield index_j, (index_i, post_id_i, distance)


def resolve_near_duplicates(index_and_groups):
    _, groups = index_and_groups
    (post,) = groups["post"]
    beaten_by = sorted(groups["beaten_by"])
    if beaten_by:
        winner_index, winner_id, distance = beaten_by[0]
        yield branches.rejected(_reject(
            post, reasons.NEAR_DUPLICATE_IMAGE,
            f"image is a near-duplicate (perceptual-hash distance {distance}) of post '{winner_id}' "
            f"(record {winner_index}), which comes first in the input"))
    else:
        yield branches.ok(post)


def _to_output(post):
    Metrics.counter(NAMESPACE, "accepted").inc()
    out = {k: v for k, v in post.items() if not k.startswith("_")}
    out["source_index"] = post["_source"]["index"]
    return out


def read_records_part(part, root: str, max_metadata_bytes: int):
    """The raw records of one part `(metadata path, k, parts)` of the input: every record whose
    index is k modulo `parts` (see `pop_tf.beam.options.source_splits`)."""
    path, k, parts = part
    for record in metadata.iter_raw_records(path, read_metadata(path, root, max_metadata_bytes)):
        if record.index % parts == k:
            yield record


def _encoded(post, test_ratio: float):
    """(split, order key, serialized record) of an accepted post, for `sinks.WriteShards`."""
    split = split_of(post["post_id"], test_ratio)
    return split, post["source_index"], records.encode_post({**post, "split": split})


def build_pipeline(p, *, metadata_path: str, root: str, staging: str, cfg: config_lib.IngestConfig,
                   now_unix: float, max_metadata_bytes: int = metadata.MAX_METADATA_BYTES,
                   num_shards: int = 1, source_parts: int = 1):
    """Adds the ingest transforms to pipeline `p`; outputs land in `staging`.

    The input is read as `source_parts` parts (1 except on Dask, see `source_splits`); the
    accepted posts are written as `num_shards` shards per split.
    """
    from_csv = metadata_path.endswith(".csv")
    raw = (p
           | "MetadataParts" >> beam.Create([(metadata_path, k, source_parts) for k in range(source_parts)])
           | "ReadRecords" >> beam.FlatMap(read_records_part, root, max_metadata_bytes)
           | "Distribute" >> beam.Reshuffle())
    validated = branches.split(raw | "Validate" >> beam.ParDo(ValidateFn(from_csv, now_unix)), "Validated")
    unique = branches.split(
        validated[OK]
        | "GroupByPostId" >> beam.GroupByKey()
        | "FirstPostId" >> beam.FlatMap(
            first_by_index, reasons.DUPLICATE_POST_ID,
            lambda post, first: f"post_id '{post['post_id']}' already appeared on line {first['_source']['line']}"),
        "Unique")
    filters = dict(filter_age=cfg.filter_age, min_age_days=cfg.min_age_days,
                   filter_caption=cfg.filter_caption, max_caption_words=cfg.max_caption_words)
    filtered = branches.split(unique[OK] | "PaperFilters" >> beam.ParDo(FilterFn(filters)), "Filtered")
    loaded = branches.split(
        filtered[OK] | "LoadImages" >> beam.ParDo(LoadImageFn(root, config_lib.to_dict(cfg))), "Loaded")
    rejected = [validated[REJECTED], unique[REJECTED], filtered[REJECTED], loaded[REJECTED]]
    accepted = loaded[OK]
    if cfg.dedupe_images:
        exact = branches.split(
            loaded[OK]
            | "KeyByPixels" >> beam.Map(lambda post: (post["pixel_digest"], post))
            | "GroupByPixels" >> beam.GroupByKey()
            | "FirstPixels" >> beam.FlatMap(
                first_by_index, reasons.DUPLICATE_IMAGE,
                lambda post, first: f"image has the same pixels as post '{first['post_id']}' (line {first['_source']['line']})"),
            "Exact")
        by_index = exact[OK] | "KeyByIndex" >> beam.Map(lambda post: (post["_source"]["index"], post))
        beaten = (exact[OK]
                  | "HashBands" >> beam.FlatMap(
                      lambda post, bands: [
                          (band, (post["_source"]["index"], post["post_id"], post["phash"], post["_colour"]))
                          for band in images.hash_bands(post["phash"], bands)],
                      images.num_bands_for_distance(cfg.near_duplicate_distance))
                  | "GroupByBand" >> beam.GroupByKey()
                  | "ComparePairs" >> beam.FlatMap(near_duplicate_pairs, cfg.near_duplicate_distance,
                                                   cfg.near_duplicate_colour_tolerance))
        near = branches.split(
            {"post": by_index, "beaten_by": beaten}
            | "JoinNearDuplicates" >> beam.CoGroupByKey()
            | "ResolveNearDuplicates" >> beam.FlatMap(resolve_near_duplicates),
            "Near")
        rejected += [exact[REJECTED], near[REJECTED]]
        accepted = near[OK]
    written_posts = (accepted
                     | "ToOutput" >> beam.Map(_to_output)
                     | "Encode" >> beam.Map(_encoded, cfg.test_ratio)
                     | "WritePosts" >> sinks.WriteShards(staging, SPLITS, num_shards, layout.SHARD_SUFFIX))
    written_rejects = (rejected
                       | "AllRejects" >> beam.Flatten()
                       | "RejectJson" >> beam.Map(
                           lambda entry: (entry["index"], json.dumps(entry, ensure_ascii=False, sort_keys=True)))
                       | "WriteRejects" >> sinks.WriteLines(staging, REJECTS))
    return sinks.finish([written_posts, written_rejects])


def _count_outputs(staging: str) -> dict:
    """Counts and summarises what the job wrote, read back from the files themselves."""
    per_split = collections.Counter()
    per_content_type = collections.Counter()
    per_split_content_type = collections.defaultdict(collections.Counter)
    post_ids = set()
    for split in SPLITS:
        for serialized in sinks.iter_records(layout.shard_pattern(staging, split)):
            post = records.decode_post(serialized)
            per_split[split] += 1
            content_type = post["content_type"] or "(none)"
            per_content_type[content_type] += 1
            per_split_content_type[split][content_type] += 1
            post_ids.add(post["post_id"])
    rejects = []
    rejects_path = FileSystems.join(staging, REJECTS)
    if FileSystems.exists(rejects_path):
        # split("\n"), not splitlines(): a reject's raw line may hold U+2028, U+0085 or a form feed,
        # which JSON keeps unescaped and splitlines() would cut records at.
        rejects = [json.loads(line) for line in files.read_file(rejects_path).decode("utf-8").split("\n")
                   if line.strip()]
    return dict(per_split=per_split, per_content_type=per_content_type,
                per_split_content_type=per_split_content_type, post_ids=post_ids, rejects=rejects)


@stage_run
def run(cfg: config_lib.IngestConfig, beam_args=()) -> dict:
    """Runs the ingest job; returns the artifact paths. Raises IngestError with a sentence."""
    if not cfg.input:
        raise IngestError("ingest needs a dataset folder (--input or ingest.input)")
    if not cfg.output:
        raise IngestError("ingest needs an output folder (--output or ingest.output)")
    options = pipeline_options(beam_args, cfg.runner)  # option typos fail before anything is written
    check_stage(STAGE, cfg)
    metadata_path = find_metadata(cfg.input)
    # Read before anything is written: a metadata file that is refused leaves no staging folder.
    max_metadata_bytes = metadata.MAX_METADATA_BYTES
    data = read_metadata(metadata_path, cfg.input, max_metadata_bytes)
    encoding_note = metadata.describe_encoding(metadata_path, data)
    if encoding_note:
        log.warning("ingest: %s", encoding_note)
    encoding = (metadata.detect_encoding(data) or ("utf-8",))[0].upper()
    input_records = sum(1 for _ in metadata.iter_raw_records(metadata_path, data))
    del data
    output = cfg.output if is_remote(cfg.output) else os.path.abspath(cfg.output)
    staging = make_staging(output)

    started = time.monotonic()
    print(f"ingest: {input_records} records in {metadata_path} → {output} "
          f"(image size {cfg.image_size}, runner {runner_name(options)})", file=sys.stderr, flush=True)
    now_unix = time.time()
    num_shards = cfg.num_shards or max(1, math.ceil(input_records / RECORDS_PER_SHARD))
    source_parts = source_splits(
        options, min(MAX_SOURCE_PARTS, math.ceil(input_records / RECORDS_PER_SOURCE_PART)))
    with beam.Pipeline(options=options) as p:
        build_pipeline(p, metadata_path=metadata_path, root=cfg.input, staging=staging, cfg=cfg,
                       now_unix=now_unix, max_metadata_bytes=max_metadata_bytes, num_shards=num_shards,
                       source_parts=source_parts)
    result = getattr(p, "result", None)
    close_runner(result)
    sinks.remove_temporary(staging)

    counted = _count_outputs(staging)
    accepted = sum(counted["per_split"].values())
    rejected = len(counted["rejects"])
    if len(counted["post_ids"]) != accepted:
        raise IngestError(
            f"accounting check failed: {accepted} records written but only {len(counted['post_ids'])} distinct "
            f"post_ids; the outputs were left in {staging} for inspection and nothing was installed")
    if accepted + rejected != input_records:
        raise IngestError(
            f"accounting check failed: {accepted} accepted + {rejected} rejected != {input_records} input "
            f"records in {metadata_path}; the outputs were left in {staging} for inspection and nothing was installed")
    per_reason = collections.Counter(entry["reason"] for entry in counted["rejects"])
    stats = {
        "input_records": input_records,
        "accepted": accepted,
        "rejected": rejected,
        "per_reason": dict(sorted(per_reason.items())),
        "per_split": {s: counted["per_split"][s] for s in SPLITS},
        "per_content_type": dict(sorted(counted["per_content_type"].items())),
        "per_split_content_type": {s: dict(sorted(counted["per_split_content_type"][s].items())) for s in SPLITS},
        "image_size": cfg.image_size,
        "metadata": metadata_path,
        "metadata_encoding": encoding,
        "format_version": records.FORMAT_VERSION,
        "seconds": round(time.monotonic() - started, 2),
        "counters": _counter_values(result),
    }
    files.write_json(FileSystems.join(staging, STATS), stats)
    files.write_json(FileSystems.join(staging, CONFIG), config_lib.to_dict(cfg))
    install(staging, output, owned_prefixes=tuple(f"{s}-" for s in SPLITS), owned_names=(REJECTS, STATS, CONFIG),
            owner=STAGE)
    print(f"ingest: done in {stats['seconds']:.1f}s: {accepted} accepted "
          f"(train {stats['per_split']['train']}, test {stats['per_split']['test']}), {rejected} rejected "
          f"{dict(per_reason.most_common())}", file=sys.stderr, flush=True)
    return {
        "output": output,
        "train": sorted(files.glob(layout.shard_pattern(output, "train"))),
        "test": sorted(files.glob(layout.shard_pattern(output, "test"))),
        "rejects": FileSystems.join(output, REJECTS),
        "stats": FileSystems.join(output, STATS),
        "config": FileSystems.join(output, CONFIG),
    }


def _counter_values(result) -> dict:
    if result is None:
        return {}
    try:
        counters = result.metrics().query()["counters"]
    except Exception:  # some runners do not report metrics; the file counts above still hold
        return {}
    totals = collections.Counter()
    for counter in counters:
        if counter.key.metric.namespace == NAMESPACE:
            totals[counter.key.metric.name] += counter.committed or counter.attempted or 0
    return dict(sorted(totals.items()))
