"""The pairs stage: the PDIP rule by hand-computed cases, and the Beam job end to end."""

import collections
import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from pop_tf import cli
from pop_tf import config as config_lib
from pop_tf import records
from pop_tf.beam import images, pairing
from pop_tf.paths import PathOverlapError
from pop_tf.stages import pairs, staging

DAY = 86400
T0 = 1_680_000_000  # posting times are unix seconds
SIZE = 8


def _post(post_id, likes, followers=None, user_id="u1", day=0.0, **extra):
    posted_at = None if day is None else T0 + round(day * DAY)
    return {"post_id": post_id, "user_id": user_id, "likes": likes, "followers": followers,
            "posted_at_unix": posted_at, **extra}


def _ids(selected):
    return [(c.post_id_a, c.post_id_b) for c in selected]


# ---------------------------------------------------------------------------------- pure rule


def test_popularity_normalises_likes_by_followers():
    assert pairing.popularity(0, 0) == 0.0
    assert pairing.popularity(99, 9) == pytest.approx(math.log(100) - math.log(10))
    assert pairing.popularity(9, 99) == pytest.approx(-math.log(10))
    # unknown followers count as 0 followers
    assert pairing.popularity(99, None) == pairing.popularity(99, 0) == pytest.approx(math.log(100))
    with pytest.raises(ValueError):
        pairing.popularity(-1, 0)
    with pytest.raises(ValueError):
        pairing.popularity(1, -3)


def test_window_boundary_is_inclusive():
    posts = [_post("a", 100, day=0), _post("b", 1, day=30)]
    assert _ids(pairing.candidate_pairs(posts, window_days=30, min_log_margin=0.5)) == [("a", "b")]
    one_second_late = [_post("a", 100, day=0), _post("b", 1, day=30 + 1 / DAY)]
    assert pairing.candidate_pairs(one_second_late, window_days=30, min_log_margin=0.5) == []
    (pair,) = pairing.candidate_pairs(posts, 30, 0.5)
    assert pair.seconds_apart == 30 * DAY


def test_margin_boundary_is_inclusive():
    # log(1 + 1) - log(1 + 0) = log 2 exactly at the threshold counts ...
    posts = [_post("a", 1, 0), _post("b", 0, 0, day=1)]
    (pair,) = pairing.candidate_pairs(posts, 30, math.log(2))
    assert (pair.post_id_a, pair.post_id_b) == ("a", "b") and pair.margin == pytest.approx(math.log(2))
    # ... just above it does not
    assert pairing.candidate_pairs(posts, 30, math.log(2) + 1e-6) == []
    # followers shift popularity: 99 likes / 9 followers vs 9 likes / 0 followers differ by 0
    same = [_post("a", 99, 9), _post("b", 9, 0, day=2)]
    assert pairing.candidate_pairs(same, 30, 0.0) == []  # equal popularity never pairs


def test_a_is_always_the_more_popular_and_margin_is_exact():
    rng = random.Random(4)
    posts = [_post(f"p{i}", rng.randrange(0, 5000), rng.choice([None, 10, 500, 3000]), day=rng.uniform(0, 20))
             for i in range(25)]
    by_id = {p["post_id"]: p for p in posts}
    candidates = pairing.candidate_pairs(posts, 10, 0.3)
    assert candidates
    for c in candidates:
        a, b = by_id[c.post_id_a], by_id[c.post_id_b]
        p_a, p_b = pairing.popularity(a["likes"], a["followers"]), pairing.popularity(b["likes"], b["followers"])
        assert p_a > p_b and c.margin == pytest.approx(p_a - p_b) and c.margin >= 0.3
        assert abs(a["posted_at_unix"] - b["posted_at_unix"]) <= 10 * DAY
    # every qualifying pair is found (brute force over all pairs)
    expected = set()
    for a in posts:
        for b in posts:
            p_a, p_b = pairing.popularity(a["likes"], a["followers"]), pairing.popularity(b["likes"], b["followers"])
            if p_a - p_b >= 0.3 and abs(a["posted_at_unix"] - b["posted_at_unix"]) <= 10 * DAY:
                expected.add((a["post_id"], b["post_id"]))
    assert set(_ids(candidates)) == expected


def test_different_users_and_incomplete_posts_never_pair():
    posts = [_post("a", 1000, user_id="u1"), _post("b", 1, user_id="u2"),
             _post("c", 1, user_id=""), _post("d", 1, user_id=None), _post("e", 1, user_id="u1", day=None)]
    assert pairing.candidate_pairs(posts, 30, 0.5) == []
    assert not pairing.can_pair(posts[2]) and not pairing.can_pair(posts[4]) and pairing.can_pair(posts[0])
    posts.append(_post("f", 1, user_id="u2", day=3))
    assert _ids(pairing.candidate_pairs(posts, 30, 0.5)) == []  # b and f: same popularity
    posts.append(_post("g", 500, user_id="u2", day=4))
    assert sorted(_ids(pairing.candidate_pairs(posts, 30, 0.5))) == [("g", "b"), ("g", "f")]


def _star_user(n=8):
    """One user, n posts a day apart with likes 10^k: every pair qualifies (margin ≥ log 10)."""
    return [_post(f"p{k}", 10 ** k, day=k) for k in range(n)]


def test_cap_is_respected_and_greedy_is_maximal():
    candidates = pairing.candidate_pairs(_star_user(), 30, 0.5)
    assert len(candidates) == 28  # all 8·7/2 pairs
    for cap in (1, 2, 3, 7):
        chosen = pairing.select_pairs(candidates, cap, seed=0)
        used = collections.Counter(i for c in chosen for i in (c.post_id_a, c.post_id_b))
        assert max(used.values()) <= cap
        # nothing more could be added: every left-out pair has an image already at the cap
        for c in set(candidates) - set(chosen):
            assert used[c.post_id_a] == cap or used[c.post_id_b] == cap
    assert len(pairing.select_pairs(candidates, 7, seed=0)) == 28  # cap = n - 1 keeps them all
    with pytest.raises(ValueError):
        pairing.select_pairs(candidates, 0, seed=0)


def test_triangle_and_chain_by_hand():
    triangle = [pairing.Candidate("a", "b", "u", 1.0, 0.0), pairing.Candidate("b", "c", "u", 1.0, 0.0),
                pairing.Candidate("a", "c", "u", 2.0, 0.0)]
    assert len(pairing.select_pairs(triangle, 1, seed=0)) == 1  # any two pairs share an image
    assert pairing.select_pairs(triangle, 2, seed=0) == sorted(triangle, key=lambda c: (c.post_id_a, c.post_id_b))
    # a chain with cap 1 keeps the pair that comes first in the seeded hash order
    chain = triangle[:2]
    for seed in range(5):
        first = min(chain, key=lambda c: pairing.pair_order_key(seed, c.post_id_a, c.post_id_b))
        assert pairing.select_pairs(chain, 1, seed) == [first]
    # the order key does not care which post is A
    assert pairing.pair_order_key(3, "x", "y") == pairing.pair_order_key(3, "y", "x")


def test_selection_is_deterministic_for_a_seed_and_varies_with_it():
    posts = _star_user(10)
    reference = pairing.select_pairs(pairing.candidate_pairs(posts, 30, 0.5), 2, seed=7)
    for shuffle_seed in range(5):
        shuffled = list(posts)
        random.Random(shuffle_seed).shuffle(shuffled)
        candidates = pairing.candidate_pairs(shuffled, 30, 0.5)
        random.Random(shuffle_seed).shuffle(candidates)
        assert pairing.select_pairs(candidates, 2, seed=7) == reference
    by_seed = {tuple(_ids(pairing.select_pairs(pairing.candidate_pairs(posts, 30, 0.5), 2, seed)))
               for seed in range(10)}
    assert len(by_seed) > 1


# ---------------------------------------------------------------------------- the Beam job

# users → (split, [(likes, followers, day)]); the ingest folder below holds these posts
USERS = {
    "prolific": ("train", [(10 ** (k % 5) * (k + 1), 100, k * 2) for k in range(10)]),
    "steady": ("train", [(50, None, 0), (500, None, 3), (5, None, 6), (52, None, 9), (5000, None, 60)]),
    "flat": ("train", [(20, 20, 0), (21, 20, 1), (22, 20, 2)]),  # margins below 0.5
    "far": ("train", [(1, 0, 0), (1000, 0, 45)]),  # outside the window
    "held": ("test", [(3, 10, 0), (300, 10, 5), (30, 10, 10), (3000, 10, 15)]),
    "held2": ("test", [(7, None, 1), (700, None, 2)]),
}


def _ingest_folder(root, with_stats=True, stats_offset=0):
    """An ingest output folder written by hand: posts of USERS plus posts that cannot pair."""
    os.makedirs(root, exist_ok=True)
    posts = []
    rng = np.random.default_rng(0)
    for user, (split, rows) in USERS.items():
        for k, (likes, followers, day) in enumerate(rows):
            posts.append({**_post(f"{user}-{k}", likes, followers, user_id=user, day=day), "split": split})
    for split in ("train", "test"):
        posts.append({**_post(f"nouser-{split}", 10, user_id=None), "split": split})
        posts.append({**_post(f"nodate-{split}", 10, user_id="steady" if split == "train" else "held", day=None),
                      "split": split})
    for i, post in enumerate(posts):
        pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        post.update(image_png=images.encode_png(pixels), edge_png=images.encode_png(pixels[..., 0]),
                    image_size=SIZE, image=f"images/{i}.png", phash=i, pixel_digest=f"{i:064x}",
                    source_index=i, caption="#x", content_type="photo")
    per_split = collections.Counter(p["split"] for p in posts)
    shards = {"train": 2, "test": 1}
    for split, count in shards.items():
        split_posts = [p for p in posts if p["split"] == split]
        for shard in range(count):
            path = os.path.join(root, f"{split}-{shard:05d}-of-{count:05d}.tfrecord.gz")
            with tf.io.TFRecordWriter(path, options="GZIP") as writer:
                for post in split_posts[shard::count]:
                    writer.write(records.encode_post(post))
    if with_stats:
        stats = {"per_split": {s: n + stats_offset for s, n in per_split.items()}, "image_size": SIZE}
        with open(os.path.join(root, "stats.json"), "w") as f:
            json.dump(stats, f)
    return {p["post_id"]: p for p in posts}


def _cfg(input_dir, output, **changes):
    cfg = config_lib.PairsConfig(input=str(input_dir), output=str(output), window_days=30,
                                 min_log_margin=0.5, max_pairs_per_image=2, seed=1)
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


def _written(paths):
    return {split: [records.decode_pair(s) for path in paths[split] for s in records.iter_serialized(path)]
            for split in ("train", "test")}


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    posts = _ingest_folder(root / "ingest")
    paths = pairs.run(_cfg(root / "ingest", root / "out"))
    return posts, paths, _written(paths), root / "ingest"


def test_every_written_pair_obeys_the_rule(job):
    posts, _, written, _ = job
    assert written["train"] and written["test"]
    for split, split_pairs in written.items():
        for pair in split_pairs:
            a, b = posts[pair["post_id_a"]], posts[pair["post_id_b"]]
            assert a["split"] == b["split"] == pair["split"] == split  # test pairs hold only test posts
            assert a["user_id"] == b["user_id"] == pair["user_id"]
            assert abs(a["posted_at_unix"] - b["posted_at_unix"]) <= 30 * DAY
            margin = pairing.popularity(a["likes"], a["followers"]) - pairing.popularity(b["likes"], b["followers"])
            assert margin >= 0.5 and pair["margin"] == pytest.approx(margin, rel=1e-6)
            assert pair["image_png_a"] == a["image_png"] and pair["image_png_b"] == b["image_png"]
            assert (pair["likes_a"], pair["followers_a"], pair["posted_at_unix_b"]) == (
                a["likes"], a["followers"], b["posted_at_unix"])
        used = collections.Counter(i for p in split_pairs for i in (p["post_id_a"], p["post_id_b"]))
        assert max(used.values()) <= 2


def test_the_job_writes_exactly_what_the_pure_rule_selects(job):
    posts, _, written, _ = job
    for split in ("train", "test"):
        split_posts = [p for p in posts.values() if p["split"] == split]
        expected = pairing.select_pairs(pairing.candidate_pairs(split_posts, 30, 0.5), 2, seed=1)
        got = sorted((p["post_id_a"], p["post_id_b"]) for p in written[split])
        assert got == sorted(_ids(expected))
    assert not {p["user_id"] for p in written["train"]} & {"flat", "far"}


def test_stats_match_the_files(job):
    posts, paths, written, ingest_dir = job
    stats = json.loads(open(paths["stats"]).read())
    for split in ("train", "test"):
        split_pairs = written[split]
        used = collections.Counter(i for p in split_pairs for i in (p["post_id_a"], p["post_id_b"]))
        per_user = collections.Counter(p["user_id"] for p in split_pairs)
        assert stats["pairs"][split] == len(split_pairs)
        assert stats["posts"][split] == sum(1 for p in posts.values() if p["split"] == split)
        assert stats["posts_in_pairs"][split] == len(used)
        assert stats["posts_without_user"][split] == 1 and stats["posts_without_date"][split] == 1
        assert stats["max_pairs_per_image"][split] == max(used.values()) <= 2
        assert stats["images_at_cap"][split] == sum(1 for n in used.values() if n == 2)
        assert stats["pairs_per_user"][split]["per_user"] == dict(per_user)
        assert stats["pairs_per_user"][split]["max"] == max(per_user.values())
        assert stats["pairs_per_user"][split]["min"] == min(per_user.values())
        histogram = stats["margin_histogram"][split]
        assert sum(histogram.values()) == len(split_pairs) and len(histogram) == 21
        expected = collections.Counter()
        for pair in split_pairs:
            low = math.floor(pair["margin"] / 0.25) * 0.25
            expected["[5.00, inf)" if low >= 5 else f"[{low:.2f}, {low + 0.25:.2f})"] += 1
        assert {label: n for label, n in histogram.items() if n} == dict(expected)
        assert stats["candidate_pairs"][split] >= stats["pairs"][split]
    assert stats["users"] == {"train": 4, "test": 2}  # users with a post that can pair
    assert stats["margin_histogram"]["bin_width"] == 0.25 and stats["image_size"] == SIZE
    assert stats["config"]["max_pairs_per_image"] == 2
    assert json.loads(open(paths["config"]).read()) == stats["config"]
    assert not [n for n in os.listdir(paths["output"]) if n.startswith((".staging", "_summary"))]


def test_parse_pair_in_tf_data(job):
    posts, paths, written, ingest_dir = job
    dataset = (tf.data.TFRecordDataset(paths["train"], compression_type="GZIP")
               .map(lambda s: records.parse_pair(s, SIZE)).batch(4))
    batch = next(iter(dataset))
    assert batch["image_a"].shape == (4, SIZE, SIZE, 3) and batch["image_a"].dtype == tf.uint8
    assert batch["margin"].dtype == tf.float32 and bool(tf.reduce_all(batch["margin"] >= 0.5))
    first = written["train"][0]
    assert batch["post_id_a"][0].numpy().decode() == first["post_id_a"]
    expected = tf.io.decode_png(posts[first["post_id_b"]]["image_png"], channels=3)
    np.testing.assert_array_equal(batch["image_b"][0].numpy(), expected.numpy())


def test_pair_record_round_trip_keeps_missing_followers():
    pair = {"post_id_a": "a-ü", "post_id_b": "b", "user_id": "u", "split": "test", "image_png_a": b"\x89A",
            "image_png_b": b"\x89B", "likes_a": 10, "likes_b": 0, "followers_a": None, "followers_b": 7,
            "posted_at_unix_a": T0, "posted_at_unix_b": T0 + 5, "image_size": SIZE, "margin": 1.5}
    decoded = records.decode_pair(records.encode_pair(pair))
    assert decoded.pop("format_version") == records.PAIR_FORMAT_VERSION
    assert decoded == pair


def test_multi_process_runner_and_rerun_with_other_shards(job, tmp_path):
    posts, paths, written, ingest_dir = job
    out = tmp_path / "out"
    first = pairs.run(_cfg(ingest_dir, out, num_shards=3),
                      ["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    assert len(first["train"]) == len(first["test"]) == 3
    again = _written(first)
    for split in ("train", "test"):
        assert sorted(records.encode_pair(p) for p in again[split]) == sorted(
            records.encode_pair(p) for p in written[split])
    second = pairs.run(_cfg(ingest_dir, out, num_shards=1, seed=2))
    assert len(second["train"]) == len(second["test"]) == 1  # the 3-shard files are gone
    assert sorted(n for n in os.listdir(out)) == sorted(
        ["config.json", "stats.json", os.path.basename(second["train"][0]), os.path.basename(second["test"][0]),
         staging.RECORD])
    assert json.loads(open(second["config"]).read())["seed"] == 2


def test_missing_input_and_same_folder_are_one_sentence(tmp_path):
    with pytest.raises(pairs.PairsError, match=r"no ingest output .* in '.*nothing-here'"):
        pairs.run(_cfg(tmp_path / "nothing-here", tmp_path / "out"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(pairs.PairsError, match="no ingest output"):
        pairs.run(_cfg(tmp_path / "empty", tmp_path / "out"))
    with pytest.raises(PathOverlapError, match="pairs.output .* is the same place as pairs.input"):
        pairs.run(_cfg(tmp_path / "empty", tmp_path / "empty"))
    with pytest.raises(pairs.PairsError, match="needs an ingest output folder"):
        pairs.run(_cfg("", tmp_path / "out"))


def test_posts_lost_on_the_way_fail_the_job_and_install_nothing(tmp_path, monkeypatch):
    _ingest_folder(tmp_path / "ingest", stats_offset=1)  # ingest says one more post per split
    with pytest.raises(pairs.PairsError, match="accounting check failed: .* train posts read but ingest's"):
        pairs.run(_cfg(tmp_path / "ingest", tmp_path / "out"))
    assert not [n for n in os.listdir(tmp_path / "out") if n.endswith(".tfrecord.gz") or n == "stats.json"]
    # a sink that silently drops pair records (as Beam's TFRecord sink does on Dask) is caught too
    _ingest_folder(tmp_path / "ingest2")
    original = pairs.pair_user_posts

    def drop_pairs(*args):
        return (item for item in original(*args) if item[0] == pairs.SUMMARY_TAG)

    monkeypatch.setattr(pairs, "pair_user_posts", drop_pairs)
    with pytest.raises(pairs.PairsError, match="0 train pairs in the files but the pipeline produced"):
        pairs.run(_cfg(tmp_path / "ingest2", tmp_path / "out2"))


def test_cli_dry_run_and_errors(tmp_path, capsys):
    code = cli.main(["pairs", "--input", "in", "--output", "out", "--set", "max_pairs_per_image=3",
                     "--set", "pairs.window_days=7", "--dry-run"])
    assert code == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["input"] == "in" and resolved["max_pairs_per_image"] == 3 and resolved["window_days"] == 7.0
    assert not (tmp_path / "out").exists()
    code = cli.main(["pairs", "--input", str(tmp_path / "absent"), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and "pop-tf pairs: error: no ingest output" in err and "Traceback" not in err
    assert cli.main(["pairs", "--input", "x", "--output", "y", "--set", "pairs.max_pairs_per_image=0"]) == 2
    assert cli.main(["pairs", "--input", "x", "--output", "y", "--runnr=X"]) == 2


def test_the_pairs_job_never_imports_tensorflow(job, tmp_path):
    """Shards are read by Beam's ReadAllFromTFRecord and counted by pop_tf.beam.sinks: neither the
    driver nor the (here in-process) workers import TensorFlow, which costs each worker seconds."""
    _, _, written, ingest_dir = job
    out = tmp_path / "out"
    script = (
        "import json, sys\n"
        "from pop_tf import config as config_lib\n"
        "from pop_tf.stages import pairs\n"
        f"cfg = config_lib.PairsConfig(input={str(ingest_dir)!r}, output={str(out)!r}, window_days=30,\n"
        "                              min_log_margin=0.5, max_pairs_per_image=2, seed=1)\n"
        "pairs.run(cfg)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))))\n")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": repo})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    again = {split: [records.decode_pair(s) for s in records.iter_serialized(str(out / f"{split}_pairs-*"))]
             for split in ("train", "test")}
    for split in ("train", "test"):
        assert sorted(records.encode_pair(p) for p in again[split]) == sorted(
            records.encode_pair(p) for p in written[split]) != []
