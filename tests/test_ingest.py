"""The ingest Beam job end to end: every record accounted for, each bad kind with its own reason."""

import io
import json
import os

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from pop_tf import config as config_lib
from pop_tf import records
from pop_tf.beam import images, reasons
from pop_tf.beam.options import BeamOptionError
from pop_tf.stages import ingest
from tests import hostile_images

SIZE = 32
GOOD = {"likes": 10, "user_id": "u1", "followers": 100, "comments": 1, "caption": "#ootd nice",
        "posted_at": "2023-01-01T00:00:00Z", "downloaded_at": "2023-03-01T00:00:00Z",
        "content_type": "photo"}


def _cfg(dataset, output, **changes):
    cfg = config_lib.IngestConfig(input=str(dataset), output=str(output), image_size=SIZE, test_ratio=0.3)
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


def _block_image(seed: int, fmt="PNG", quality=95) -> bytes:
    """Distinct images: random colour blocks, far apart in perceptual hash from each other."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    image = Image.fromarray(blocks).resize((60, 60), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=quality)
    return buffer.getvalue()


class Dataset:
    """Builds a dataset folder line by line and remembers the reason each line must get."""

    def __init__(self, root):
        self.root = root
        os.makedirs(root / "images", exist_ok=True)
        self.lines = []
        self.expected = []  # reason per line, None = accepted

    def image(self, name, data):
        (self.root / "images" / name).write_bytes(data)
        return f"images/{name}"

    def post(self, expected, post_id, image, **fields):
        self.raw(expected, json.dumps({**GOOD, "post_id": post_id, "image": image, **fields}))

    def raw(self, expected, line):
        self.lines.append(line)
        self.expected.append(expected)

    def write(self, name="metadata.jsonl"):
        (self.root / name).write_text("\n".join(self.lines) + "\n", encoding="utf-8")
        return self.root


def _rejects(output):
    with open(os.path.join(output, "rejects.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _accepted(output):
    return [records.decode_post(s) for s in records.iter_serialized(os.path.join(output, "*.tfrecord.gz"))]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A hostile corpus: every image kind of tests/hostile_images.py plus every record-level fault."""
    root = tmp_path_factory.mktemp("hostile")
    ds = Dataset(root)
    for i, (name, (build, expected)) in enumerate(sorted(hostile_images.CORPUS.items())):
        ds.post(expected, f"img-{name}", ds.image(f"{name}.jpg", build()))
    good = ds.image("good.png", _block_image(1))
    outside = root.parent / f"{root.name}-outside.png"
    outside.write_bytes(_block_image(2))
    os.symlink(outside, root / "images" / "link.png")
    os.makedirs(root / "images" / "folder.png")
    ds.post(None, "ok-1", good)
    ds.raw(reasons.MALFORMED_LINE, '{"post_id": "broken", ')
    ds.raw(reasons.NOT_AN_OBJECT, '["a", "list"]')
    ds.raw(reasons.EMPTY_LINE, "   ")
    ds.post(reasons.MISSING_FIELD, "no-likes", good, likes=None)
    ds.raw(reasons.MISSING_FIELD, json.dumps({**GOOD, "image": good}))  # no post_id
    ds.post(reasons.INVALID_FIELD, "neg-likes", good, likes=-5)
    ds.post(reasons.INVALID_FIELD, "str-likes", good, likes="many")
    ds.raw(reasons.INVALID_FIELD, json.dumps({**GOOD, "post_id": "nan", "image": good}).replace("10", "NaN", 1))
    ds.post(reasons.INVALID_FIELD, "huge-followers", good, followers=10**15)
    ds.post(reasons.INVALID_DATE, "bad-date", good, posted_at="31/12/2022")
    ds.post(reasons.INVALID_DATE, "future", good, posted_at="2999-01-01T00:00:00Z", downloaded_at="2999-03-01T00:00:00Z")
    ds.post(reasons.UNSAFE_PATH, "traversal", "../../etc/passwd")
    ds.post(reasons.UNSAFE_PATH, "absolute", "/etc/passwd")
    ds.post(reasons.UNSAFE_PATH, "symlink", "images/link.png")
    ds.post(reasons.NOT_AN_IMAGE, "directory", "images/folder.png")
    ds.post(reasons.MISSING_FILE, "missing", "images/nope.png")
    ds.post(reasons.DUPLICATE_POST_ID, "ok-1", ds.image("other.png", _block_image(3)))
    ds.post(reasons.FILTER_TOO_RECENT, "recent", good, posted_at="2023-02-20T00:00:00Z")
    ds.post(reasons.FILTER_CAPTION_TOO_LONG, "long", good, caption="#a b c d e f g")
    ds.post(reasons.FILTER_CAPTION_MENTION, "mention", good, caption="#a @b")
    ds.post(reasons.FILTER_CAPTION_NO_HASHTAG, "nohash", good, caption="plain words")
    ds.post(None, "unicode-caption", ds.image("u.png", _block_image(4)), caption="#été 👗\u0007", extra_field={"k": 1})
    ds.write()
    # ENCODING_ERROR needs bytes that are not UTF-8: appended as a raw line.
    with open(root / "metadata.jsonl", "ab") as f:
        f.write(b'{"post_id": "\xff\xfe", "image": "x"}\n')
    ds.expected.append(reasons.ENCODING_ERROR)
    output = root.parent / f"{root.name}-out"
    # Image dedupe is tested separately: the corpus holds the same drawing in many encodings.
    paths = ingest.run(_cfg(root, output, dedupe_images=False))
    return ds, output, paths


def test_every_line_gets_its_expected_outcome(hostile):
    ds, output, _ = hostile
    rejects = {entry["line"]: entry for entry in _rejects(output)}
    for line, expected in enumerate(ds.expected, start=1):
        if expected is None:
            assert line not in rejects, f"line {line} was rejected: {rejects.get(line)}"
        else:
            assert line in rejects, f"line {line} should be rejected as {expected}"
            assert rejects[line]["reason"] == expected, (line, rejects[line])
            assert rejects[line]["message"] and rejects[line]["record"] is not None


def test_accounting_and_stats(hostile):
    ds, output, paths = hostile
    stats = json.loads(open(paths["stats"]).read())
    accepted = _accepted(output)
    assert stats["input_records"] == len(ds.expected)
    assert stats["accepted"] == len(accepted) == ds.expected.count(None)
    assert stats["accepted"] + stats["rejected"] == stats["input_records"]
    expected_reasons = {}
    for reason in ds.expected:
        if reason:
            expected_reasons[reason] = expected_reasons.get(reason, 0) + 1
    assert stats["per_reason"] == dict(sorted(expected_reasons.items()))
    assert sum(stats["per_split"].values()) == stats["accepted"]
    assert stats["per_content_type"] == {"photo": stats["accepted"]}
    assert json.loads(open(paths["config"]).read())["image_size"] == SIZE


def test_unusual_valid_images_come_out_rgb_at_the_configured_size(hostile):
    _, output, _ = hostile
    accepted = _accepted(output)
    valid_kinds = {name for name, (_, reason) in hostile_images.CORPUS.items() if reason is None}
    assert {p["post_id"] for p in accepted} >= {f"img-{name}" for name in valid_kinds}
    for post in accepted:
        image = np.array(Image.open(io.BytesIO(post["image_png"])))
        edge = np.array(Image.open(io.BytesIO(post["edge_png"])))
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
        assert edge.shape == (SIZE, SIZE) and set(np.unique(edge)) <= {0, 255}
        assert post["split"] in ("train", "test")
        assert post["split"] == ingest.split_of(post["post_id"], 0.3)
    unicode_post = next(p for p in accepted if p["post_id"] == "unicode-caption")
    assert unicode_post["caption"] == "#été 👗\u0007" and unicode_post["extra"] == {"extra_field": {"k": 1}}


def test_rejects_are_sorted_and_keep_the_original_line(hostile):
    _, output, _ = hostile
    rejects = _rejects(output)
    assert [r["index"] for r in rejects] == sorted(r["index"] for r in rejects)
    malformed = next(r for r in rejects if r["reason"] == reasons.MALFORMED_LINE)
    assert malformed["record"] == '{"post_id": "broken", ' and "line" in malformed["message"]


def _smooth_image(seed: int) -> Image.Image:
    """A photo-like picture: smooth colour fields, so pHash is stable under re-encoding."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).resize((160, 160), Image.BICUBIC)


def _encode(image, fmt, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_duplicates_first_in_input_survives(tmp_path):
    ds = Dataset(tmp_path / "d")
    picture = _smooth_image(10)
    original, reencoded = _encode(picture, "PNG"), _encode(picture, "JPEG", quality=95)
    recoloured = _encode(Image.fromarray(255 - np.asarray(picture)[..., ::-1]), "PNG")
    hashes = [images.pad_to_square_and_resize(images.decode_image(d), SIZE) for d in (original, reencoded)]
    assert images.hamming_distance(*map(images.perceptual_hash, hashes)) <= 6  # precondition
    ds.post(None, "z-first", ds.image("a.png", original))
    ds.post(reasons.DUPLICATE_IMAGE, "a-copy", ds.image("b.png", original))  # same pixels, smaller id
    ds.post(reasons.NEAR_DUPLICATE_IMAGE, "near", ds.image("c.jpg", reencoded))
    ds.post(None, "other-colours", ds.image("d.png", recoloured))  # same structure, other product
    for seed in range(11, 19):
        ds.post(None, f"distinct-{seed}", ds.image(f"{seed}.png", _block_image(seed)))
    ds.write()
    paths = ingest.run(_cfg(ds.root, tmp_path / "out"))
    got = {r["line"]: r["reason"] for r in _rejects(paths["output"])}
    assert got == {2: reasons.DUPLICATE_IMAGE, 3: reasons.NEAR_DUPLICATE_IMAGE}
    near = next(r for r in _rejects(paths["output"]) if r["reason"] == reasons.NEAR_DUPLICATE_IMAGE)
    assert "z-first" in near["message"]
    # switched off, all copies are kept
    paths = ingest.run(_cfg(ds.root, tmp_path / "out2", dedupe_images=False))
    assert len(_accepted(paths["output"])) == len(ds.lines)


def test_near_duplicate_resolution_in_a_test_pipeline():
    """The LSH bucket comparison: a later post within the distance loses to the earliest one."""
    grey, red = bytes([128] * 48), bytes([200, 0, 0] * 16)
    members = [(5, "p5", 0b1111, grey), (2, "p2", 0b1110, grey), (9, "p9", 0xFFFF_0000, grey),
               (7, "p7", 0b1111, red)]
    with BeamTestPipeline() as p:
        beaten = (p | beam.Create([("band0", members)])
                  | beam.FlatMap(ingest.near_duplicate_pairs, 2, 24))
        assert_that(beaten, equal_to([(5, (2, "p2", 1))]))


def test_synthetic_dataset_rejects_exactly_what_synth_broke(tmp_path):
    from pop_tf import synth
    dataset = tmp_path / "synth"
    synth.run(config_lib.SynthConfig(output=str(dataset), num_posts=300, image_size=64, seed=3))
    paths = ingest.run(_cfg(dataset, tmp_path / "out"))
    broken = {}
    with open(dataset / "broken.jsonl") as f:
        for line in f:
            entry = json.loads(line)
            broken[entry["post_id"]] = entry["reason"]
    rejected = {r["post_id"]: r["reason"] for r in _rejects(paths["output"])}
    assert rejected == broken
    stats = json.loads(open(paths["stats"]).read())
    assert stats["accepted"] == 300 - len(broken)


def test_csv_metadata_and_rerun_replaces_outputs(tmp_path):
    root = tmp_path / "csv"
    ds = Dataset(root)
    header = "image,post_id,likes,caption,posted_at,downloaded_at,user_id"
    rows = [f'{ds.image(f"{i}.png", _block_image(100 + i))},c{i},{i},"#tag\nline two",2023-01-01,2023-03-01,u'
            for i in range(6)]
    rows.append("images/0.png,bad,notanumber,#x,2023-01-01,2023-03-01,u")
    (root / "metadata.csv").write_text("\ufeff" + header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    first = ingest.run(_cfg(root, out, num_shards=3))
    assert len(first["train"]) + len(first["test"]) == 6  # 3 shards per split
    second = ingest.run(_cfg(root, out, num_shards=1))
    assert len(second["train"]) == len(second["test"]) == 1  # the 3-shard files are gone
    accepted = _accepted(out)
    assert sorted(p["post_id"] for p in accepted) == [f"c{i}" for i in range(6)]
    assert accepted[0]["caption"] == "#tag\nline two"
    assert [r["reason"] for r in _rejects(out)] == [reasons.INVALID_FIELD]
    assert not [n for n in os.listdir(out) if n.startswith(".staging")]


def test_empty_metadata(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    (root / "metadata.jsonl").write_text("")
    paths = ingest.run(_cfg(root, tmp_path / "out"))
    stats = json.loads(open(paths["stats"]).read())
    assert stats["input_records"] == stats["accepted"] == stats["rejected"] == 0


def test_a_lost_record_fails_the_job_and_installs_nothing(tmp_path, monkeypatch):
    ds = Dataset(tmp_path / "d")
    for seed in range(3):
        ds.post(None, f"p{seed}", ds.image(f"{seed}.png", _block_image(200 + seed)))
    ds.write()
    # A bug that silently drops every post in the last step before writing must not go unnoticed.
    monkeypatch.setattr(ingest, "resolve_near_duplicates", lambda item: iter(()))
    out = tmp_path / "out"
    with pytest.raises(ingest.IngestError, match="accounting check failed: 0 accepted"):
        ingest.run(_cfg(ds.root, out))
    assert not [n for n in os.listdir(out) if n.endswith(".tfrecord.gz") or n == "stats.json"]


def test_missing_metadata_and_bad_beam_option(tmp_path):
    (tmp_path / "dataset").mkdir()
    with pytest.raises(ingest.IngestError, match="no metadata.jsonl or metadata.csv"):
        ingest.run(_cfg(tmp_path / "dataset", tmp_path / "out"))
    with pytest.raises(BeamOptionError, match="--runnr"):
        ingest.run(_cfg(tmp_path, tmp_path / "out"), ["--runnr=DirectRunner"])


def test_multi_process_runner_gives_the_same_result(tmp_path):
    ds = Dataset(tmp_path / "d")
    for seed in range(12):
        ds.post(None, f"m{seed}", ds.image(f"{seed}.png", _block_image(300 + seed)))
    ds.post(reasons.MISSING_FILE, "gone", "images/gone.png")
    ds.write()
    paths = ingest.run(_cfg(ds.root, tmp_path / "out"),
                       ["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    assert sorted(p["post_id"] for p in _accepted(paths["output"])) == sorted(f"m{s}" for s in range(12))
    assert [r["reason"] for r in _rejects(paths["output"])] == [reasons.MISSING_FILE]
