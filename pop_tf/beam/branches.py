"""Several outputs of one step without Beam's tagged outputs, so they work on every runner.

Beam 2.77's DaskRunner hands every output of a multi-output ParDo (`with_outputs`, and so
`beam.Partition`) to each consumer whatever its tag: a transform meant for rejects also gets the
accepted posts (seen as `TypeError: Object of type bytes is not JSON serializable` when a post's
PNG bytes reach the rejects' JSON encoder). pop_tf's steps therefore yield `(tag, value)` pairs
into one PCollection (`ok`, `rejected`, `summary`, …) and `split` selects each tag with its own
FlatMap, which every runner fuses into the step that made them.
"""

import apache_beam as beam

OK = "ok"
REJECTED = "rejected"


def ok(value):
    return OK, value


def rejected(value):
    return REJECTED, value


def _select(item, tag):
    if item[0] == tag:
        yield item[1]


def split(pcoll, label: str, tags=(OK, REJECTED)) -> dict:
    """{tag: PCollection of the values `pcoll` tagged so} for each of `tags`."""
    return {tag: pcoll | f"{label}.{tag}" >> beam.FlatMap(_select, tag) for tag in tags}
