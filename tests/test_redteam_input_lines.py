"""Red team, hostile metadata lines: whatever a line holds, it ends as one record or one reject.

The generators below build their own variants (seeded random plus adversarial families: JSON
nested thousands deep, integers with thousands of digits, lone UTF-16 surrogates, random bytes,
mutated good lines, CSV rows past the csv module's limits, ...). Every variant goes through the
parsers, validation and the writers' encoders; a real ingest job then runs on a sample and must
finish with accepted + rejected = lines. Also here: ids that differ only by Unicode normal form,
and metadata files in UTF-16/UTF-32.
"""

import collections
import json
import logging
import random
import unicodedata
import zlib

import pytest

from pop_tf import records
from pop_tf.beam import metadata, reasons
from pop_tf.beam.reasons import Rejected
from pop_tf.stages import ingest
from tests.test_ingest import GOOD, _accepted, _block_image, _cfg, _rejects

GOOD_POST = {**GOOD, "image": "images/good.png", "post_id": "good"}
FIELDS = ("image", "post_id", "likes", "user_id", "followers", "comments", "caption", "posted_at",
          "downloaded_at", "content_type", "extra")
# What the generators produced, per test: outcome -> count (read by whoever reports the figures).
TALLY = collections.defaultdict(collections.Counter)


def _good_line(post_id="good", /, **changes) -> str:
    return json.dumps({**GOOD_POST, "post_id": post_id, **changes}, ensure_ascii=False)


def _nested(rng, depth: int, leaf: str = "1") -> str:
    opens, closes = [], []
    for _ in range(depth):
        if rng.random() < 0.5:
            opens.append("[")
            closes.append("]")
        else:
            opens.append('{"k":')
            closes.append("}")
    return "".join(opens) + leaf + "".join(reversed(closes))


def _random_text(rng, n: int) -> str:
    """Random code points from every plane, lone surrogates excepted (they cannot be bytes)."""
    out = []
    for _ in range(n):
        cp = rng.choice((rng.randrange(0x20, 0x7f), rng.randrange(0, 0x20), rng.randrange(0x80, 0xd800),
                         rng.randrange(0xe000, 0x110000)))
        out.append(chr(cp))
    return "".join(out).replace("\n", " ")


def _surrogate_escape(rng) -> str:
    return "\\u%04x" % rng.randrange(0xd800, 0xe000)


ADVERSARIAL_JSON = [
    '"', "{", "}", '{"', "\\", '{"a":"\\u', '{"a":"\\ud800\\u"}', "NaN", "Infinity", "-Infinity", "null", "0",
    '{"likes": NaN}', '{"post_id": 1e400}', '{"a":1}{"b":2}', "{} ", "\x0c", "\u2028", "\ufeff{}",
    '{"post_id": "\\u0000"}', '{"caption": "\\ud83d\\udc57"}', '{"\\ud800": 1}', '[' * 100_000, '{"a":' * 50_000,
    "]" * 1000, '{"a": "' + "\\" * 10_001 + '"}', "1" * 5000, "-" + "9" * 4301, "0." + "1" * 100_000,
    "1e" + "9" * 5000, '{"likes": ' + "9" * 4300 + "}", '{"likes": 1' + "0" * 4300 + "}",
    _good_line(caption="#a \\ud800"), '{"image": "images/\\udcff.png", "post_id": "x", "likes": 1}',
    '{"image": "' + "a/" * 5000 + 'x.png", "post_id": "long-path", "likes": 1}',
]


def hostile_json_lines(seed: int, n: int):
    """(family, line as bytes without a newline) x n: adversarial, then seeded random families."""
    rng = random.Random(seed)
    out = [("adversarial", line.encode("utf-8", "surrogatepass")) for line in ADVERSARIAL_JSON]
    while len(out) < n:
        family = rng.choice(("deep", "deep_ok", "bigint", "bigint_ok", "float", "surrogate", "pair", "bytes",
                             "unicode", "mutated", "types", "control", "long"))
        field = rng.choice(FIELDS)
        if family == "deep":
            depth = rng.choice((65, 100, 1000, 5000, 20_000))
            value = _nested(rng, depth)
            line = rng.choice((value, _good_line(**{field: "@@"}).replace('"@@"', value), value[:-1]))
        elif family == "deep_ok":
            line = _good_line(f"d{len(out)}", extra="@@").replace('"@@"', _nested(rng, rng.randrange(1, 60)))
        elif family in ("bigint", "bigint_ok"):
            digits = rng.randrange(4301, 20_000) if family == "bigint" else rng.randrange(13, 4300)
            number = rng.choice(("", "-")) + str(rng.randrange(1, 10)) + "".join(
                rng.choice("0123456789") for _ in range(digits - 1))
            line = _good_line(f"b{len(out)}", **{field: "@@"}).replace('"@@"', rng.choice((number, f"[{number}]")))
        elif family == "float":
            number = rng.choice(("1e999999", "-1e400", "1.5e-99999", "1." + "7" * rng.randrange(10, 5000),
                                 "4.0", "1e12", "1e13", "-0.0"))
            line = _good_line(f"f{len(out)}", **{field: "@@"}).replace('"@@"', number)
        elif family == "surrogate":
            where = rng.choice(("value", "key", "nested", "caption_mid"))
            bad = _surrogate_escape(rng)
            if where == "value":
                line = _good_line(f"s{len(out)}", **{field: "@@"}).replace("@@", bad)
            elif where == "key":
                line = _good_line(f"s{len(out)}", **{"@@": 1}).replace("@@", bad)
            elif where == "nested":
                line = _good_line(f"s{len(out)}", extra={"tags": ["ok", "@@"]}).replace("@@", bad)
            else:
                line = _good_line(f"s{len(out)}", caption="#a b@@c").replace("@@", bad)
        elif family == "pair":  # a valid surrogate pair is one astral character, not an error
            line = _good_line(f"p{len(out)}", caption="#a @@").replace("@@", "\\ud83d\\udc57")
        elif family == "bytes":
            out.append((family, bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300))).replace(b"\n", b"")))
            continue
        elif family == "unicode":
            line = rng.choice((_random_text(rng, rng.randrange(1, 200)),
                               _good_line(f"u{len(out)}", **{field: _random_text(rng, rng.randrange(0, 40))})))
        elif family == "mutated":
            raw = bytearray(_good_line(f"m{len(out)}").encode())
            for _ in range(rng.randrange(1, 6)):
                pos = rng.randrange(len(raw))
                op = rng.randrange(3)
                if op == 0:
                    del raw[pos]
                elif op == 1:
                    raw[pos] = rng.randrange(256)
                else:
                    raw.insert(pos, rng.randrange(256))
            out.append((family, bytes(raw).replace(b"\n", b"")))
            continue
        elif family == "types":
            value = rng.choice((None, True, False, [], {}, [1, 2], {"a": "b"}, -1, 0, 2.5, float("nan"), "",
                                " ", "x" * 300, 10**15, "2023-13-45", "../x.png", "C:\\x.png", "s3://b/x.png"))
            line = _good_line(f"t{len(out)}", **{field: value})
        elif family == "control":
            value = rng.choice(("a\x00b", "a\x07b", "\x1b[31mred", "line\u2028sep", "tab\there", "\x7f"))
            line = _good_line(f"c{len(out)}", **{field: value})
            if rng.random() < 0.5:  # raw control characters instead of JSON escapes
                line = line.replace("\\u0000", "\x00").replace("\\u0007", "\x07").replace("\\u001b", "\x1b")
        else:  # long
            line = _good_line(f"l{len(out)}", **{field: "#a " + "x" * rng.randrange(10_000, 200_000)})
        out.append((family, line.encode("utf-8", "surrogatepass")))
    return out


def _outcome(record: metadata.RawRecord, from_csv: bool):
    """'record', or the reject reason, as ingest's validation step would decide it; checks that
    what ingest would write for it (a TFRecord or a rejects.jsonl line) can be encoded."""
    assert (record.fields is None) == (record.reason is not None), record
    if record.reason:
        assert record.reason in reasons.ALL and record.message
        entry = metadata.reject_entry(record, record.reason, record.message)
        json.dumps(entry, ensure_ascii=False).encode("utf-8")
        return record.reason
    try:
        post = metadata.validate_record(record.fields, from_csv=from_csv)
    except Rejected as e:
        json.dumps(metadata.reject_entry(record, e.reason, e.message), ensure_ascii=False).encode("utf-8")
        return e.reason
    records.encode_post({**post, "image_png": b"", "edge_png": b"", "image_size": 1, "phash": 0,
                         "pixel_digest": "", "split": "train", "source_index": record.index})
    ingest.split_of(post["post_id"], 0.1)
    return "record"


def test_fuzzed_json_lines_each_end_as_one_record_or_one_reject():
    lines = hostile_json_lines(seed=3, n=700)
    by_family = collections.defaultdict(collections.Counter)
    for family, line in lines:
        got = list(metadata.iter_jsonl(line + b"\n"))
        assert len(got) == 1 and got[0].line == 1, (family, line[:80])
        outcome = _outcome(got[0], from_csv=False)
        by_family[family][outcome] += 1
        TALLY["json lines"][outcome] += 1
    # Each hostile family met its specific reason, not a catch-all.
    assert set(by_family["deep"]) == {reasons.MALFORMED_LINE}
    assert by_family["deep_ok"]["record"] == sum(by_family["deep_ok"].values())
    assert by_family["surrogate"] == {reasons.ENCODING_ERROR: sum(by_family["surrogate"].values())}
    assert by_family["pair"]["record"] == sum(by_family["pair"].values())
    assert set(by_family["bigint"]) == {reasons.MALFORMED_LINE}
    # All of a file's lines, each once and in order, with nothing dropped or merged.
    whole = b"\n".join(line for _, line in lines)
    records_ = list(metadata.iter_jsonl(whole))
    assert [r.index for r in records_] == list(range(len(lines)))


@pytest.mark.parametrize("line, words", [
    ('{"a":' * 5000 + "1" + "}" * 5000, "more than 64 levels deep"),
    ('{"likes": ' + "9" * 5000 + "}", "more than 4300 digits"),
    ('{"post_id": "\\ud800", "image": "a.png", "likes": 1}', "field 'post_id' holds a lone UTF-16 surrogate"),
    ('{"\\udfff": 1}', "a field name"),
    ('{"extra": {"k": ["\\udc00"]}}', "field 'extra'"),
])
def test_the_red_team_lines_get_a_sentence(line, words):
    (record,) = metadata.iter_jsonl(line.encode())
    assert record.reason in (reasons.MALFORMED_LINE, reasons.ENCODING_ERROR) and words in record.message


def test_nesting_within_the_limit_parses_and_beyond_it_is_refused_unparsed():
    rng = random.Random(5)
    inside = _good_line(extra="@@").replace('"@@"', _nested(rng, metadata.MAX_JSON_DEPTH - 1))
    (record,) = metadata.iter_jsonl(inside.encode())
    assert record.fields and metadata.validate_record(record.fields)["extra"]
    beyond = '{"x": "[[[[ not nesting, a string ]]]]", "y": ' + "[" * 65 + "]" * 65 + "}"
    (record,) = metadata.iter_jsonl(beyond.encode())
    assert record.reason == reasons.MALFORMED_LINE and "64 levels" in record.message
    brackets_in_strings = json.dumps({**GOOD_POST, "caption": "#a " + "[{" * 10_000})
    (record,) = metadata.iter_jsonl(brackets_in_strings.encode())
    assert record.fields is not None  # brackets inside strings are text, not nesting


def _csv_value(rng) -> str:
    kind = rng.randrange(11)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40))).decode("latin-1")
    if kind == 1:
        return '"' * rng.randrange(1, 4) + "x"
    if kind == 2:
        return "a\x00b"
    if kind == 3:
        return "y" * rng.randrange(131_000, 140_000)  # around csv.field_size_limit()
    if kind == 4:
        return "9" * rng.randrange(4000, 9000)
    if kind == 5:
        return _random_text(rng, rng.randrange(0, 30))
    if kind == 6:
        return '"a,\nb"'
    if kind == 7:
        return "\r"
    if kind == 8:
        return "\udced\udca0\udc80"  # a UTF-16 surrogate encoded as UTF-8 (CESU), written raw below
    if kind == 9:
        return ""
    return "#ok"


CSV_HEADER = "image,post_id,likes,caption,posted_at,downloaded_at,user_id"


def hostile_csv_rows(seed: int, n: int):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        cells = ["images/good.png", f"r{i}", str(rng.randrange(100)), "#a b", "2023-01-01", "2023-03-01", "u"]
        for _ in range(rng.randrange(1, 4)):
            cells[rng.randrange(len(cells))] = _csv_value(rng)
        if rng.random() < 0.1:
            cells = cells[:rng.randrange(len(cells))]
        rows.append(",".join(cells))
    return rows


def _csv_bytes(header: str, rows) -> bytes:
    return (header + "\n" + "\n".join(rows) + "\n").encode("utf-8", "surrogateescape")


def test_fuzzed_csv_rows_never_break_the_reader():
    rows = hostile_csv_rows(seed=11, n=400)
    got = list(metadata.iter_csv(_csv_bytes(CSV_HEADER, rows)))
    assert [r.index for r in got] == list(range(len(got))) and got
    for record in got:
        TALLY["csv rows"][_outcome(record, from_csv=True)] += 1
    # Hostile headers: bad bytes, NUL, a field past the limit, nothing at all.
    for header in ("image,post_id,lik\udcffes", "image,\x00,likes", "h" * 140_000 + ",post_id", "", '"', ",,,"):
        got = list(metadata.iter_csv(_csv_bytes(header, rows[:30])))
        assert [r.index for r in got] == list(range(len(got)))
        for record in got:
            TALLY["csv headers"][_outcome(record, from_csv=True)] += 1


def _dataset(root, name: str, data: bytes):
    (root / "images").mkdir(parents=True)
    (root / "images" / "good.png").write_bytes(_block_image(1))
    (root / name).write_bytes(data)
    return root


def _check_run(paths, expected_records: int, predicted: dict):
    stats = json.loads(open(paths["stats"]).read())
    rejects = _rejects(paths["output"])
    accepted = _accepted(paths["output"])
    assert stats["input_records"] == expected_records
    assert stats["accepted"] + stats["rejected"] == expected_records
    seen = sorted([r["index"] for r in rejects] + [p["source_index"] for p in accepted])
    assert seen == list(range(expected_records))  # every record exactly once
    for entry in rejects:
        assert entry["reason"] in reasons.ALL and entry["message"]
        if predicted.get(entry["index"], "record") != "record":
            assert entry["reason"] == predicted[entry["index"]], entry
    return stats


def test_a_real_ingest_job_accounts_for_every_hostile_line(tmp_path):
    sample = hostile_json_lines(seed=7, n=160)
    lines = [_good_line("good-first").encode()] + [line for _, line in sample]
    root = _dataset(tmp_path / "d", "metadata.jsonl", b"\n".join(lines) + b"\n")
    predicted = {r.index: _outcome(r, False) for r in metadata.iter_jsonl(b"\n".join(lines))}
    paths = ingest.run(_cfg(root, tmp_path / "out", dedupe_images=False, filter_caption=False))
    stats = _check_run(paths, len(lines), predicted)
    assert "good-first" in {p["post_id"] for p in _accepted(paths["output"])}
    TALLY["ingest jsonl"].update({"record": stats["accepted"], **stats["per_reason"]})


def test_a_real_ingest_job_accounts_for_every_hostile_csv_row(tmp_path):
    rows = ["images/good.png,good-first,1,#a,2023-01-01,2023-03-01,u"] + hostile_csv_rows(seed=13, n=60)
    data = _csv_bytes(CSV_HEADER, rows)
    root = _dataset(tmp_path / "d", "metadata.csv", data)
    got = list(metadata.iter_csv(data))
    predicted = {r.index: _outcome(r, True) for r in got}
    paths = ingest.run(_cfg(root, tmp_path / "out", dedupe_images=False, filter_caption=False))
    stats = _check_run(paths, len(got), predicted)
    TALLY["ingest csv"].update({"record": stats["accepted"], **stats["per_reason"]})


# ------------------------------------------------------------------------------------------
# Ids that differ only by Unicode normal form
# ------------------------------------------------------------------------------------------

# Characters with a canonical decomposition (é = e + U+0301, 가 = ᄀ + ᅡ, ...), found, not listed.
_COMPOSED = [chr(cp) for cp in range(0xc0, 0xd7a4)
             if unicodedata.decomposition(chr(cp)) and not unicodedata.decomposition(chr(cp)).startswith("<")
             and unicodedata.normalize("NFC", chr(cp)) == chr(cp)]


def _id_pair(rng):
    """The same id in NFC and NFD: random ASCII mixed with characters that decompose."""
    chars = [rng.choice(_COMPOSED) if rng.random() < 0.5 else rng.choice("abcXYZ019-_") for _ in range(rng.randrange(1, 12))]
    nfc = unicodedata.normalize("NFC", "".join(chars))
    return nfc, unicodedata.normalize("NFD", nfc)


def test_ids_differing_only_by_normal_form_validate_to_one_id():
    rng = random.Random(17)
    for _ in range(300):
        nfc, nfd = _id_pair(rng)
        if nfc == nfd:
            continue
        a = metadata.validate_record({**GOOD_POST, "post_id": nfc, "user_id": nfd})
        b = metadata.validate_record({**GOOD_POST, "post_id": nfd, "user_id": nfc})
        assert a["post_id"] == b["post_id"] == a["user_id"] == b["user_id"] == nfc
        TALLY["nfc ids"]["one id"] += 1


def test_nfd_copy_of_a_post_is_a_duplicate_in_a_real_ingest(tmp_path):
    rng = random.Random(19)
    lines, expected = [], []
    for i in range(6):
        nfc, nfd = _id_pair(rng)
        nfc, nfd = nfc + "é", unicodedata.normalize("NFD", nfc + "é")  # always differ
        first, second = (nfc, nfd) if i % 2 else (nfd, nfc)
        lines += [_good_line(first), _good_line(second)]
        expected += [None, reasons.DUPLICATE_POST_ID]
    root = _dataset(tmp_path / "d", "metadata.jsonl", ("\n".join(lines) + "\n").encode())
    paths = ingest.run(_cfg(root, tmp_path / "out", dedupe_images=False))
    got = {r["line"]: r["reason"] for r in _rejects(paths["output"])}
    assert got == {i + 1: reason for i, reason in enumerate(expected) if reason}
    assert all(p["post_id"] == unicodedata.normalize("NFC", p["post_id"]) for p in _accepted(paths["output"]))


# ------------------------------------------------------------------------------------------
# Metadata files that are not UTF-8
# ------------------------------------------------------------------------------------------

ENCODINGS = [("utf-16", "UTF-16-LE", True), ("utf-16-le", "UTF-16-LE", False), ("utf-16-be", "UTF-16-BE", False),
             ("utf-32", "UTF-32-LE", True), ("utf-32-be", "UTF-32-BE", False)]


def _sample_text(rng, n: int, csv_format: bool) -> str:
    if csv_format:
        rows = [f"images/good.png,e{i},{rng.randrange(100)},#été {_random_text(rng, 3).replace(',', '')},"
                f"2023-01-01,2023-03-01,u" for i in range(n)]
        return CSV_HEADER + "\r\n" + "\r\n".join(rows) + "\r\n"
    return "".join(_good_line(f"e{i}-{'é👗'[i % 2]}", caption=f"#a {_random_text(rng, 5)}") + "\n" for i in range(n))


@pytest.mark.parametrize("codec, name, bom", ENCODINGS)
@pytest.mark.parametrize("path", ["metadata.jsonl", "metadata.csv"])
def test_utf16_and_utf32_files_read_like_their_utf8_copy(codec, name, bom, path):
    rng = random.Random(zlib.crc32(f"{codec} {path}".encode()))
    text = _sample_text(rng, 25, path.endswith(".csv"))
    data = text.encode(codec)
    assert metadata.detect_encoding(data) == (name.lower(), bom)
    as_utf8 = [(r.reason, r.fields) for r in metadata.iter_raw_records(path, text.encode("utf-8"))]
    assert [(r.reason, r.fields) for r in metadata.iter_raw_records(path, data)] == as_utf8
    note = metadata.describe_encoding(path, data)
    assert name in note and "convert it to UTF-8" in note
    TALLY["utf-16/32 files"]["records"] += len(as_utf8)


def test_utf8_files_are_never_taken_for_utf16():
    rng = random.Random(23)
    for _ in range(200):
        text = _random_text(rng, rng.randrange(0, 400))
        assert metadata.detect_encoding(text.encode("utf-8")) is None
        assert metadata.describe_encoding("metadata.jsonl", text.encode("utf-8")) is None
        TALLY["utf-8 texts"]["not mistaken"] += 1


def test_a_broken_utf16_unit_rejects_only_its_line():
    lines = [_good_line("one"), _good_line("two"), _good_line("three")]
    data = bytearray(("\n".join(lines) + "\n").encode("utf-16"))
    where = data.index("two".encode("utf-16-le"))
    data[where:where + 2] = b"\x00\xd8"  # a lone high surrogate unit instead of "t"
    data += b"\x41"  # and an odd byte at the end
    got = list(metadata.iter_jsonl(metadata._to_utf8(bytes(data))[0], "UTF-16-LE"))
    assert [r.reason for r in got[:3]] == [None, reasons.ENCODING_ERROR, None]
    assert "not UTF-16-LE" in got[1].message
    assert got[3].reason == reasons.ENCODING_ERROR  # the trailing half unit, on a line of its own


def test_a_real_ingest_of_a_utf16_file_accepts_its_records_and_says_so(tmp_path, caplog):
    text = "".join(_good_line(f"w{i}") + "\n" for i in range(5))
    utf8 = _dataset(tmp_path / "a", "metadata.jsonl", text.encode("utf-8"))
    utf16 = _dataset(tmp_path / "b", "metadata.jsonl", text.encode("utf-16"))
    with caplog.at_level(logging.WARNING, logger="pop_tf.ingest"):
        paths16 = ingest.run(_cfg(utf16, tmp_path / "out16", dedupe_images=False))
    paths8 = ingest.run(_cfg(utf8, tmp_path / "out8", dedupe_images=False))
    stats16, stats8 = (json.loads(open(p["stats"]).read()) for p in (paths16, paths8))
    assert stats16["accepted"] == stats8["accepted"] == 5 and stats16["per_reason"] == stats8["per_reason"]
    assert stats16["metadata_encoding"] == "UTF-16-LE" and stats8["metadata_encoding"] == "UTF-8"
    assert any("UTF-16-LE" in r.getMessage() and "convert it to UTF-8" in r.getMessage() for r in caplog.records)
