"""The `truth.jsonl` format: what pop_tf's synthetic dataset knows about each post and hides from the pipeline.

`pop_tf.synth` writes it beside `metadata.jsonl`, one JSON object a line:
`{"post_id", "intrinsic", "user_id", "shape", "sleeve", "color", "pattern", …}` — the hidden
intrinsic popularity the likes were made from and the attributes that were drawn
(`synth.Garment.truth`). Only evaluation reads it: train_ranker and evaluate compare scores with
`intrinsic`, the attribute figures compare readings with the attributes. Other truth files may
hold only `post_id` and `intrinsic`.
"""

import json

FILE_NAME = "truth.jsonl"


def read_truth_rows(path: str) -> dict:
    """{post_id: row} of a truth.jsonl (blank lines skipped)."""
    rows = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                rows[str(row["post_id"])] = row
    return rows


def read_truth(path: str) -> dict:
    """{post_id: intrinsic popularity} of a truth.jsonl (blank lines skipped)."""
    return {post_id: float(row["intrinsic"]) for post_id, row in read_truth_rows(path).items()}
