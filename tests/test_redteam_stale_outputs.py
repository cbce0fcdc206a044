"""`pop-tf run` never takes stale outputs as complete: an edited dataset reruns ingest and what
follows, and a `--from` run killed halfway leaves no later stage marked complete.

Most variants run the pipeline's bookkeeping over stand-in stages (each writes its resolved
config and returns), so dozens of generated edits and kills stay cheap; one test runs the real
ingest to see its stale outputs replaced.
"""

import json
import os
import random

import pytest

from pop_tf import config as config_lib
from pop_tf import pipeline, synth
from tests.conftest import tiny_config

STAGES = [s for s in pipeline.STAGE_ORDER if s != "synth"]


class Killed(KeyboardInterrupt):
    """What a kill looks like from inside the stage (SIGINT); SIGKILL runs no code at all."""


@pytest.fixture
def fake_stages(monkeypatch):
    """Stand-in stages: the names of those that ran, in order; `kill_at` makes one raise."""
    ran, kill_at = [], set()

    def run_stage(stage, config, workdir, dataset):
        ran.append(stage)
        if stage in kill_at:
            raise Killed(stage)
        folder = os.path.join(workdir, stage)
        config_lib.write_resolved(getattr(config, stage), folder)
        return {"output": folder, **({"report": os.path.join(folder, "report.html")} if stage == "evaluate" else {})}

    monkeypatch.setattr(pipeline, "_run_stage", run_stage)
    return ran, kill_at


def _dataset(root, posts=6):
    (root / "images" / "sub").mkdir(parents=True)
    lines = []
    for i in range(posts):
        (root / "images" / f"{i}.png").write_bytes(bytes([i]) * (100 + i))
        lines.append(json.dumps({"post_id": f"p{i}", "image": f"images/{i}.png", "likes": 10 + i}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    (root / "truth.jsonl").write_text('{"post_id": "p0", "p": 0.5}\n')
    return root


def _keep_mtime(path, change):
    """Applies `change` to `path`, then puts its modification time back: only the content tells."""
    info = os.stat(path)
    change()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def _edits(root, rng):
    """(name, changes the dataset?, apply) for one generated edit of the dataset at `root`."""
    images = sorted((root / "images").rglob("*.png"))
    image = rng.choice(images)
    metadata = root / "metadata.jsonl"
    digit = str(rng.randrange(10))

    def edit_metadata_same_size():  # one digit of a like count, same length, same mtime
        text = metadata.read_text()
        at = [i for i, c in enumerate(text) if c.isdigit() and c != digit]
        i = rng.choice(at)
        _keep_mtime(metadata, lambda: metadata.write_text(text[:i] + digit + text[i + 1:]))

    def append_metadata():
        with open(metadata, "a") as f:
            f.write(json.dumps({"post_id": f"n{rng.randrange(10**6)}", "image": "images/0.png", "likes": 1}) + "\n")

    def touch_image():
        info = os.stat(image)
        os.utime(image, ns=(info.st_atime_ns, info.st_mtime_ns + rng.randrange(1, 10**9)))

    def grow_image_same_mtime():
        _keep_mtime(image, lambda: open(image, "ab").write(b"\0"))

    def add_image():
        (root / "images" / "sub" / f"new{rng.randrange(10**6)}.png").write_bytes(b"png" * rng.randrange(1, 50))

    def remove_image():
        if len(images) > 1:
            image.unlink()
        else:
            add_image()

    def rename_image():
        image.rename(image.with_name(f"renamed{rng.randrange(10**6)}.png"))

    def edit_truth_same_size():
        truth = root / "truth.jsonl"
        text = truth.read_text()
        new = text.replace("0.5", "0.7") if "0.5" in text else text.replace("0.7", "0.5")
        _keep_mtime(truth, lambda: truth.write_text(new))

    def read_everything():  # reading is not changing
        for path in root.rglob("*"):
            if path.is_file():
                path.read_bytes()

    def nothing():
        pass

    return rng.choice([
        ("edit metadata (same size and time)", True, edit_metadata_same_size),
        ("append a metadata line", True, append_metadata),
        ("touch an image", True, touch_image),
        ("grow an image (same time)", True, grow_image_same_mtime),
        ("add an image", True, add_image),
        ("remove an image", True, remove_image),
        ("rename an image", True, rename_image),
        ("edit truth.jsonl (same size and time)", True, edit_truth_same_size),
        ("read every file", False, read_everything),
        ("nothing", False, nothing),
    ])


def test_generated_dataset_edits_rerun_ingest_and_nothing_else_does(tmp_path, fake_stages):
    ran, _ = fake_stages
    root, workdir = _dataset(tmp_path / "dataset"), tmp_path / "w"
    config = tiny_config()
    pipeline.run(config, str(workdir), dataset=str(root), until="score")
    assert ran == ["ingest", "pairs", "train_ranker", "score"]
    rng = random.Random(7)
    tally = {}
    for attempt in range(40):
        name, changes, apply = _edits(root, rng)
        apply()
        ran.clear()
        pipeline.run(config, str(workdir), dataset=str(root), until="score")
        expected = ["ingest", "pairs", "train_ranker", "score"] if changes else []
        assert ran == expected, (attempt, name)
        tally[name] = tally.get(name, 0) + 1
    assert len(tally) >= 8, tally  # most kinds of edit came up


def test_a_fingerprint_is_the_content_not_the_walk(tmp_path):
    root = _dataset(tmp_path / "dataset")
    first = pipeline.dataset_fingerprint(str(root))
    assert pipeline.dataset_fingerprint(str(root)) == first
    # pop_tf's own bookkeeping files in the folder are not the dataset's
    (root / pipeline.MARKER).write_text("{}")
    (root / ".staging-lock").write_text("pid 1")
    assert pipeline.dataset_fingerprint(str(root)) == first
    os.symlink(str(root), str(root / "images" / "loop"))  # a link back up the tree: walked once, not forever
    assert pipeline.dataset_fingerprint(str(root)) == first
    elsewhere = tmp_path / "more_images"
    elsewhere.mkdir()
    (elsewhere / "x.png").write_bytes(b"png")
    os.symlink(str(elsewhere), str(root / "images" / "linked"))  # images behind a link are the dataset's too
    linked = pipeline.dataset_fingerprint(str(root))
    assert linked != first
    os.utime(elsewhere / "x.png", ns=(1, 10**9))
    assert pipeline.dataset_fingerprint(str(root)) != linked


def test_an_edited_dataset_reruns_the_real_ingest_and_replaces_its_outputs(tmp_path, caplog):
    root, workdir = tmp_path / "dataset", tmp_path / "w"
    synth.run(config_lib.SynthConfig(output=str(root), num_posts=30, image_size=32, seed=11))
    config = tiny_config()
    stats = workdir / "ingest" / "stats.json"
    pipeline.run(config, str(workdir), dataset=str(root), until="ingest")
    before = json.loads(stats.read_text())["input_records"]
    caplog.clear()
    pipeline.run(config, str(workdir), dataset=str(root), until="ingest")
    assert "[ingest] complete with the same inputs, skipped" in caplog.text
    caplog.clear()
    metadata = root / "metadata.jsonl"
    lines = metadata.read_text().splitlines(keepends=True)
    _keep_mtime(metadata, lambda: metadata.write_text("".join(lines[:-3])))
    pipeline.run(config, str(workdir), dataset=str(root), until="ingest")
    assert "[ingest] running" in caplog.text
    assert json.loads(stats.read_text())["input_records"] == before - 3


# ------------------------------------------------------------------ --from killed


def _marked(workdir) -> list:
    return [s for s in STAGES if (workdir / s / pipeline.MARKER).exists()]


@pytest.mark.parametrize("forced", STAGES)
def test_a_killed_from_run_leaves_no_later_stage_marked_complete(forced, tmp_path, fake_stages):
    """Generated variants: --from each stage, killed in each stage from there to the end."""
    ran, kill_at = fake_stages
    root, workdir = _dataset(tmp_path / "dataset"), tmp_path / "w"
    config = tiny_config(f"export.export_dir={tmp_path / 'serving'}")
    pipeline.run(config, str(workdir), dataset=str(root))
    assert _marked(workdir) == STAGES
    later = STAGES[STAGES.index(forced):]
    for killed in later:
        kill_at.clear()
        kill_at.add(killed)
        ran.clear()
        with pytest.raises(Killed):
            pipeline.run(config, str(workdir), dataset=str(root), from_stage=forced)
        assert ran == later[:later.index(killed) + 1]
        # every stage before the killed one that this run redid is complete again; none from it on
        assert _marked(workdir) == STAGES[:STAGES.index(killed)], (forced, killed)
        kill_at.clear()
        ran.clear()
        pipeline.run(config, str(workdir), dataset=str(root))  # a plain rerun redoes exactly those
        assert ran == STAGES[STAGES.index(killed):], (forced, killed)
        assert _marked(workdir) == STAGES


def test_markers_go_before_the_forced_stage_starts(tmp_path, monkeypatch, fake_stages):
    ran, _ = fake_stages
    root, workdir = _dataset(tmp_path / "dataset"), tmp_path / "w"
    config = tiny_config()
    pipeline.run(config, str(workdir), dataset=str(root), until="score")
    seen = {}
    inner = pipeline._run_stage

    def watch(stage, *args):
        seen.setdefault(stage, _marked(workdir))
        return inner(stage, *args)

    monkeypatch.setattr(pipeline, "_run_stage", watch)
    pipeline.run(config, str(workdir), dataset=str(root), until="pairs", from_stage="pairs")
    assert seen["pairs"] == ["ingest"]  # train_ranker and score went too, though this run stops at pairs
