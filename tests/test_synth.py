"""Tests of the embedded synthetic dataset (pop_tf.synth)."""

import dataclasses
import datetime as dt
import json
import os

import numpy as np
import pytest
import scipy.fft
import scipy.stats
from PIL import Image, UnidentifiedImageError

from pop_tf import synth
from pop_tf.beam import reasons
from pop_tf.config import ConfigError, SynthConfig

NUM_POSTS = 500
IMAGE_SIZE = 64
REQUIRED = {"image": str, "post_id": str, "likes": int, "user_id": str, "followers": int,
            "comments": int, "caption": str, "posted_at": str, "downloaded_at": str,
            "content_type": str}
FILE_REASONS = {reasons.CORRUPT_IMAGE, reasons.NOT_AN_IMAGE, reasons.MISSING_FILE,
                reasons.EMPTY_FILE}
FILTER_REASONS = {reasons.FILTER_TOO_RECENT, reasons.FILTER_CAPTION_TOO_LONG,
                  reasons.FILTER_CAPTION_NO_HASHTAG, reasons.FILTER_CAPTION_MENTION}


def _make(root, seed, num_posts=NUM_POSTS, **kwargs):
    config = SynthConfig(output=str(root), num_posts=num_posts, image_size=IMAGE_SIZE, seed=seed,
                         **kwargs)
    return synth.run(config)


def _read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _parse_time(text):
    assert text.endswith("Z"), text
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


class Dataset:
    def __init__(self, paths):
        self.paths = paths
        self.root = paths["dataset"]
        self.metadata = _read_jsonl(paths["metadata"])
        self.truth = {row["post_id"]: row for row in _read_jsonl(paths["truth"])}
        self.broken = {row["post_id"]: row["reason"] for row in _read_jsonl(paths["broken"])}

    def accepted(self):
        """Records that break no rule: the ones ingest must turn into examples."""
        return [r for r in self.metadata if r["post_id"] not in self.broken]

    def decodable(self):
        """Records whose image file is valid (every record not broken by its file)."""
        return [r for r in self.metadata if self.broken.get(r["post_id"]) not in FILE_REASONS]

    def image(self, record):
        with Image.open(os.path.join(self.root, record["image"])) as im:
            im.load()
            return im.copy()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs with seed 1 and one with seed 2 (each ~2-3 s)."""
    return {name: _make(tmp_path_factory.mktemp(name), seed)
            for name, seed in (("a", 1), ("b", 1), ("c", 2))}


@pytest.fixture(scope="module")
def data(runs):
    return Dataset(runs["a"])


def _tree_bytes(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


# ---------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_gives_byte_identical_files(runs):
    a, b = runs["a"], runs["b"]
    for key in ("metadata", "truth", "broken"):
        with open(a[key], "rb") as fa, open(b[key], "rb") as fb:
            assert fa.read() == fb.read(), key
    images_a = _tree_bytes(a["images"])
    images_b = _tree_bytes(b["images"])
    assert len(images_a) > NUM_POSTS * 0.9
    assert images_a == images_b


def test_other_seed_differs(runs):
    for key in ("metadata", "truth", "broken"):
        with open(runs["a"][key], "rb") as fa, open(runs["c"][key], "rb") as fc:
            assert fa.read() != fc.read(), key
    images_a = _tree_bytes(runs["a"]["images"])
    images_c = _tree_bytes(runs["c"]["images"])
    assert not any(images_a.get(name) == data for name, data in images_c.items())


def test_returns_paths_and_leaves_no_temp_files(runs):
    paths = runs["a"]
    for key in ("dataset", "metadata", "truth", "broken", "images", "config"):
        assert os.path.exists(paths[key]), key
    leftovers = [n for n in os.listdir(paths["dataset"]) if n.endswith(".tmp")]
    assert leftovers == []


# ---------------------------------------------------------------------------------------------
# Input contract


def test_metadata_follows_the_input_contract(data):
    assert len(data.metadata) == NUM_POSTS
    missing = {p for p, reason in data.broken.items() if reason == reasons.MISSING_FILE}
    ids = [r["post_id"] for r in data.metadata]
    assert len(set(ids)) == len(ids)
    for record in data.metadata:
        for key, kind in REQUIRED.items():
            assert isinstance(record[key], kind), (key, record)
        for key in ("likes", "followers", "comments"):
            assert not isinstance(record[key], bool) and record[key] >= 0
        assert record["content_type"] == "photo"
        assert record["source"] == "pop_tf.synth"  # an unknown extra field to carry through
        path = record["image"]
        assert not os.path.isabs(path) and ".." not in path.split("/")
        assert path.startswith("images/") and path.endswith((".png", ".jpg"))
        assert os.path.exists(os.path.join(data.root, path)) == (record["post_id"] not in missing)
        assert _parse_time(record["posted_at"]) < _parse_time(record["downloaded_at"])
    assert len({r["downloaded_at"] for r in data.metadata}) == 1
    assert sum(r["image"].endswith(".jpg") for r in data.metadata) >= NUM_POSTS * 0.05


def test_users_post_often_and_close_in_time(data):
    by_user = {}
    for record in data.accepted():
        by_user.setdefault(record["user_id"], []).append(_parse_time(record["posted_at"]))
    assert len(by_user) >= 30
    followers = {}
    for record in data.metadata:
        assert followers.setdefault(record["user_id"], record["followers"]) == record["followers"]
    assert max(followers.values()) > 10 * min(followers.values())  # log-normal spread
    # Most accepted posts have another post of the same user within 30 days.
    close = 0
    for times in by_user.values():
        times.sort()
        gaps = np.diff([t.timestamp() for t in times]) / 86400.0
        for i in range(len(times)):
            near = [g for g in gaps[max(0, i - 1):i + 1] if g <= 30]
            close += bool(near)
    assert close > 0.8 * len(data.accepted())


# ---------------------------------------------------------------------------------------------
# Images


def test_images_are_garments_on_white(data):
    records = data.decodable()
    assert len(records) == NUM_POSTS - len([r for r in data.broken.values() if r in FILE_REASONS])
    for record in records:
        image = data.image(record)
        assert image.mode == "RGB" and image.size == (IMAGE_SIZE, IMAGE_SIZE)
        pixels = np.asarray(image, dtype=np.int16)
        corners = pixels[[0, 0, -1, -1], [0, -1, 0, -1]]
        assert corners.min() >= 240, record["post_id"]
        garment = (255 - pixels).max(axis=-1) > 40
        assert 0.05 < garment.mean() < 0.8, record["post_id"]
        assert (pixels.reshape(-1, 3) > 245).all(axis=-1).mean() > 0.2  # mostly white


def test_variety_of_attributes(data):
    truth = list(data.truth.values())
    shapes = {t["shape"] for t in truth}
    assert len(shapes) >= 6 and shapes <= set(synth.SHAPES)
    assert len({t["color"] for t in truth}) >= 8
    assert {t["pattern"] for t in truth} >= {"solid", "stripes", "dots", "checks"}
    assert {t["sleeve"] for t in truth} == {"none", "short", "long"}
    for t in truth:
        assert t["sleeve"] in synth.SLEEVES_BY_SHAPE[t["shape"]]
    for key in ("scale", "dx", "dy", "angle", "pattern_phase"):
        assert len({t[key] for t in truth}) > 0.95 * len(truth), key  # continuous jitter


def _phash(image, resample):
    """64-bit DCT perceptual hash, written independently of pop_tf.synth."""
    grey = np.asarray(image.convert("L").resize((32, 32), resample), dtype=np.float64)
    low = scipy.fft.dctn(grey)[:8, :8].ravel()
    return np.packbits(low > np.median(low[1:]))


@pytest.mark.parametrize("resample", [Image.Resampling.BILINEAR, Image.Resampling.BICUBIC,
                                      Image.Resampling.LANCZOS])
def test_no_two_images_are_near_duplicates(data, resample):
    hashes = np.stack([_phash(data.image(r), resample) for r in data.decodable()])
    bits = np.unpackbits(hashes, axis=1).astype(np.int16)
    distance = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    np.fill_diagonal(distance, 64)
    assert distance.min() > 4


# ---------------------------------------------------------------------------------------------
# Hidden truth


def test_truth_has_one_row_per_post(data):
    assert list(data.truth) == [r["post_id"] for r in data.metadata]
    for row in data.truth.values():
        assert isinstance(row["intrinsic"], float) and np.isfinite(row["intrinsic"])
        assert {"shape", "color", "pattern", "sleeve", "scale", "angle"} <= set(row)


def test_likes_follow_intrinsic_popularity_within_users(data):
    by_user = {}
    for record in data.accepted():
        by_user.setdefault(record["user_id"], []).append(
            (np.log1p(record["likes"]), data.truth[record["post_id"]]["intrinsic"]))
    rhos = []
    for pairs in by_user.values():
        if len(pairs) >= 10:
            log_likes, intrinsic = np.array(pairs).T
            rhos.append(scipy.stats.spearmanr(log_likes, intrinsic).statistic)
    assert len(rhos) >= 5
    assert np.mean(rhos) > 0.3


def _share_explained(values, groups):
    """Between-group variance over total variance (R² of a one-hot regression)."""
    values, groups = np.asarray(values), np.asarray(groups)
    means = {g: values[groups == g].mean() for g in set(groups)}
    fitted = np.array([means[g] for g in groups])
    return ((fitted - values.mean()) ** 2).sum() / ((values - values.mean()) ** 2).sum()


def test_shape_explains_more_than_colour_and_pattern(data):
    truth = list(data.truth.values())
    intrinsic = [t["intrinsic"] for t in truth]
    shape = _share_explained(intrinsic, [t["shape"] for t in truth])
    colour = _share_explained(intrinsic, [t["color"] for t in truth])
    pattern = _share_explained(intrinsic, [t["pattern"] for t in truth])
    assert shape > 0.6
    assert shape > 4 * colour and shape > 4 * pattern
    assert colour > 0.01 and pattern > 0.001  # style matters, just less


def test_intrinsic_matches_the_documented_function(data):
    """truth.jsonl is what `intrinsic_popularity` says about the drawn garment."""
    for row in list(data.truth.values())[:50]:
        garment = synth.Garment(**{f.name: (tuple(row[f.name]) if isinstance(row[f.name], list)
                                            else row[f.name])
                                   for f in dataclasses.fields(synth.Garment)})
        assert synth.intrinsic_popularity(garment) == pytest.approx(row["intrinsic"], abs=1e-3)


# ---------------------------------------------------------------------------------------------
# Records broken on purpose


def _caption_ok(caption):
    words = caption.split()
    return len(words) <= 6 and any(w.startswith("#") for w in words) and "@" not in caption


def _old_enough(record):
    age = _parse_time(record["downloaded_at"]) - _parse_time(record["posted_at"])
    return age >= dt.timedelta(days=30)


def test_broken_records_break_exactly_one_rule(data):
    expected = int(round(0.05 * NUM_POSTS))
    counts = {}
    for reason in data.broken.values():
        counts[reason] = counts.get(reason, 0) + 1
    for reason in FILTER_REASONS:
        assert counts.get(reason) == expected, reason
    assert sum(counts.get(r, 0) for r in FILE_REASONS) == 6
    assert all(counts.get(r, 0) >= 1 for r in FILE_REASONS)
    assert set(counts) == FILTER_REASONS | FILE_REASONS

    for record in data.metadata:
        reason = data.broken.get(record["post_id"])
        caption, words = record["caption"], record["caption"].split()
        path = os.path.join(data.root, record["image"])
        if reason != reasons.FILTER_TOO_RECENT:
            assert _old_enough(record), record
        if reason not in FILTER_REASONS - {reasons.FILTER_TOO_RECENT}:
            assert _caption_ok(caption), record
        if reason not in FILE_REASONS:
            data.image(record)  # decodes
        if reason == reasons.FILTER_TOO_RECENT:
            assert not _old_enough(record)
        elif reason == reasons.FILTER_CAPTION_TOO_LONG:
            plain = [w for w in words if not w.startswith("#")]
            assert len(plain) >= 7 and "#" in caption and "@" not in caption
        elif reason == reasons.FILTER_CAPTION_NO_HASHTAG:
            assert 1 <= len(words) <= 6 and "#" not in caption and "@" not in caption
        elif reason == reasons.FILTER_CAPTION_MENTION:
            assert len(words) <= 6 and "#" in caption
            assert any(w.startswith("@") and len(w) > 1 for w in words)
        elif reason == reasons.MISSING_FILE:
            assert not os.path.lexists(path)
        elif reason == reasons.EMPTY_FILE:
            assert os.path.getsize(path) == 0
        elif reason == reasons.NOT_AN_IMAGE:
            assert path.endswith(".jpg") and os.path.getsize(path) > 0
            with pytest.raises(UnidentifiedImageError):
                Image.open(path)
        elif reason == reasons.CORRUPT_IMAGE:
            with open(path, "rb") as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n"
            with pytest.raises(OSError):
                with Image.open(path) as im:
                    im.load()


def test_broken_choice_depends_on_seed(runs):
    other = Dataset(runs["c"])
    assert set(other.broken) != set(Dataset(runs["a"]).broken)


def test_too_many_broken_records_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="num_corrupt"):
        _make(tmp_path, 0, num_posts=10, broken_share=0.2)
    with pytest.raises(ConfigError, match="synth.output"):
        synth.run(SynthConfig(output=""))
    with pytest.raises(ConfigError, match="synth.image_size"):
        synth.run(SynthConfig(output=str(tmp_path), image_size=16))
    with pytest.raises(ConfigError, match="synth.num_posts"):
        synth.run(SynthConfig(output=str(tmp_path), num_posts=0))


def test_rerun_into_same_dir_replaces_the_old_dataset(tmp_path):
    _make(tmp_path, 5, num_posts=60, num_users=5)
    paths = _make(tmp_path, 6, num_posts=40, num_users=5)
    data = Dataset(paths)
    assert len(data.metadata) == 40
    referenced = {os.path.basename(r["image"]) for r in data.metadata}
    on_disk = set(os.listdir(paths["images"]))
    assert on_disk <= referenced  # nothing stale left behind
    for post_id, reason in data.broken.items():
        if reason == reasons.MISSING_FILE:
            assert f"{post_id}.png" not in on_disk
