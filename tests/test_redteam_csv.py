"""Post ids come from the user's metadata; in the CSV files pop_tf writes, none may run as a
spreadsheet formula (CSV injection), and every pop_tf reader gets the ids back exactly.
"""

import csv
import io
import json
import pathlib
import random
import re

import numpy as np
from PIL import Image

from pop_tf import config as config_lib
from pop_tf import records, serving
from pop_tf.models import clusterer
from pop_tf.stages import cluster, ingest, score

FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")
SEEDS = ["=1+1", "=HYPERLINK(\"http://x\",\"y\")", "+41", "-2", "@SUM(A1)", "=cmd|' /C calc'!A0", " =1", "  +x",
         "'", "'=1", "''", "\t=1", "\r=1", "\n-1", "-", "=", "@", "a=b", "x,=y", "\"=1\"", "ok", "1", "é=1", " "]


def _dangerous_ids(rng, count):
    ids = list(SEEDS)
    alphabet = ["=", "+", "-", "@", "'", " ", "\t", "\r", "\n", ",", "\"", "a", "1", "é", "|", "%", "(", ")"]
    while len(ids) < count:
        ids.append("".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 8))))
    return list(dict.fromkeys(ids))


def _safe_cell(cell: str) -> bool:
    """What a spreadsheet would not run: text not starting with a formula character, even after spaces."""
    return cell.startswith("'") or not (cell.startswith(FORMULA_START) or cell.lstrip(" ").startswith(FORMULA_START))


def test_generated_ids_round_trip_and_are_never_formulas():
    rng = random.Random(1)
    ids = _dangerous_ids(rng, 400)
    for text in ids:
        cell = records.csv_cell(text)
        assert _safe_cell(cell), repr(text)
        assert records.from_csv_cell(cell) == text, repr(text)
    # injective: two ids never share a cell
    assert len({records.csv_cell(t) for t in ids}) == len(ids)


def test_assignments_csv_round_trips_generated_ids(tmp_path):
    rng = random.Random(2)
    ids = _dangerous_ids(rng, 300)
    labels = [rng.randrange(5) for _ in ids]
    cluster._write_assignments(str(tmp_path / cluster.ASSIGNMENTS), ids, ["train"] * len(ids), labels)
    with open(tmp_path / cluster.ASSIGNMENTS, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    assert all(_safe_cell(row[0]) for row in rows)
    assert clusterer.read_assignments(str(tmp_path)) == dict(zip(ids, labels))


def _png(seed):
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((48, 48), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


class _Ranker:
    """Stands in for the ranker SavedModel: a score from the image's mean."""

    def score(self, images):
        import tensorflow as tf

        return {"score": tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2, 3])}


def test_scores_csv_of_ingested_dangerous_ids_round_trips(tmp_path, monkeypatch):
    # ids ingest accepts (no control characters, not blank)
    ids = [i for i in _dangerous_ids(random.Random(3), 60)
           if i.strip() and not re.search(r"[\x00-\x1f\x7f]", i)]
    dataset = tmp_path / "dataset"
    (dataset / "images").mkdir(parents=True)
    lines = []
    for n, post_id in enumerate(ids):
        (dataset / "images" / f"{n}.png").write_bytes(_png(n))
        lines.append(json.dumps({"post_id": post_id, "image": f"images/{n}.png", "likes": n, "caption": "#x",
                                 "posted_at": "2023-01-01T00:00:00Z", "downloaded_at": "2023-03-01T00:00:00Z"}))
    (dataset / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    ingested = tmp_path / "ingest"
    ingest.run(config_lib.IngestConfig(input=str(dataset), output=str(ingested), image_size=32, test_ratio=0.3,
                                       filter_caption=False))
    stored = {records.decode_post(s)["post_id"] for s in records.iter_serialized(str(ingested / "*.tfrecord.gz"))}
    assert len(stored) >= len(ids) // 2  # near-duplicate images aside, most went through

    model = tmp_path / "ranker"
    model.mkdir()
    serving.write_model_card(str(model), "ranker", {}, "x")
    import tensorflow as tf

    monkeypatch.setattr(tf.saved_model, "load", lambda path: _Ranker())
    out = tmp_path / "score"
    paths = score.run(config_lib.ScoreConfig(input=str(ingested), model=str(model), output=str(out)))
    with open(paths["scores"], newline="", encoding="utf-8") as f:
        raw = [row[0] for row in csv.reader(f)][1:]
    assert all(_safe_cell(cell) for cell in raw), [c for c in raw if not _safe_cell(c)]
    assert {row["post_id"] for row in score.read_scores(str(out))} == stored
    assert any(cell.startswith("'") for cell in raw)  # some ids needed it


def test_every_csv_writer_and_reader_in_pop_tf_goes_through_records():
    """The class, not the example: a new csv writer or reader of ids must neutralise or restore them."""
    root = pathlib.Path(cluster.__file__).parents[1]
    offenders = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if path.name == "metadata.py" and path.parent.name == "beam":
            continue  # reads the user's own metadata.csv: input, not a file pop_tf wrote
        writes = re.search(r"csv\.(writer|DictWriter)\(", text)
        reads = re.search(r"csv\.(reader|DictReader)\(", text)
        if writes and "csv_cell(" not in text:
            offenders.append(f"{path.name} writes CSV without records.csv_cell")
        if reads and "from_csv_cell(" not in text:
            offenders.append(f"{path.name} reads CSV without records.from_csv_cell")
    assert offenders == []
