"""Pure record functions of ingest: parsing, validation and the paper filters."""

import datetime
import json

import pytest

from pop_tf.beam import metadata, reasons
from pop_tf.beam.reasons import Rejected

NOW = datetime.datetime(2024, 6, 1, tzinfo=datetime.timezone.utc)
GOOD = {"image": "images/a.png", "post_id": "p1", "likes": 12, "user_id": "u1", "followers": 100,
        "comments": 3, "caption": "#ootd summer", "posted_at": "2024-01-01T10:00:00Z",
        "downloaded_at": "2024-03-01T10:00:00Z", "content_type": "photo"}


def _validate(**changes):
    fields = {**GOOD, **changes}
    fields = {k: v for k, v in fields.items() if v is not DROP}
    return metadata.validate_record(fields, now=NOW)


DROP = object()


def test_good_record_is_normalised_and_extras_carried():
    post = metadata.validate_record({**GOOD, "source": "scrape-7", "tags": [1, 2]}, now=NOW)
    assert post["post_id"] == "p1" and post["likes"] == 12 and post["image"] == "images/a.png"
    assert post["posted_at_unix"] == int(datetime.datetime(2024, 1, 1, 10, tzinfo=datetime.timezone.utc).timestamp())
    assert post["extra"] == {"source": "scrape-7", "tags": [1, 2]}


@pytest.mark.parametrize("changes, reason, words", [
    ({"image": DROP}, reasons.MISSING_FIELD, "image"),
    ({"post_id": DROP}, reasons.MISSING_FIELD, "post_id"),
    ({"likes": DROP}, reasons.MISSING_FIELD, "likes"),
    ({"likes": -1}, reasons.INVALID_FIELD, "likes"),
    ({"likes": float("nan")}, reasons.INVALID_FIELD, "likes"),
    ({"likes": 1e15}, reasons.INVALID_FIELD, "implausibly large"),
    ({"likes": "12"}, reasons.INVALID_FIELD, "likes"),
    ({"likes": True}, reasons.INVALID_FIELD, "likes"),
    ({"likes": 2.5}, reasons.INVALID_FIELD, "likes"),
    ({"followers": -3}, reasons.INVALID_FIELD, "followers"),
    ({"comments": "many"}, reasons.INVALID_FIELD, "comments"),
    ({"post_id": "  "}, reasons.INVALID_FIELD, "post_id"),
    ({"post_id": "a\x00b"}, reasons.INVALID_FIELD, "post_id"),
    ({"post_id": ["x"]}, reasons.INVALID_FIELD, "post_id"),
    ({"caption": 5}, reasons.INVALID_FIELD, "caption"),
    ({"posted_at": "yesterday"}, reasons.INVALID_DATE, "posted_at"),
    ({"posted_at": 1700000000}, reasons.INVALID_DATE, "posted_at"),
    ({"posted_at": "2030-01-01T00:00:00Z", "downloaded_at": DROP}, reasons.INVALID_DATE, "future"),
    ({"posted_at": "2024-04-01T00:00:00Z"}, reasons.INVALID_DATE, "after downloaded_at"),
    ({"image": "/etc/passwd"}, reasons.UNSAFE_PATH, "absolute"),
    ({"image": "../outside.png"}, reasons.UNSAFE_PATH, "escapes"),
    ({"image": "images/../../x.png"}, reasons.UNSAFE_PATH, "escapes"),
    ({"image": "C:\\\\x.png"}, reasons.UNSAFE_PATH, "absolute"),
    ({"image": "s3://bucket/x.png"}, reasons.UNSAFE_PATH, "absolute"),
    ({"image": "images/a\n.png"}, reasons.INVALID_FIELD, "control"),
])
def test_invalid_records_get_specific_reasons(changes, reason, words):
    with pytest.raises(Rejected) as info:
        _validate(**changes)
    assert info.value.reason == reason
    assert words in info.value.message


def test_integer_post_ids_are_strings_and_inner_dotdot_is_normalised():
    post = _validate(post_id=123456, image="images/x/../a.png")
    assert post["post_id"] == "123456" and post["image"] == "images/a.png"


def test_unicode_and_control_characters_in_captions_are_kept():
    post = _validate(caption="#été 👗 tab\there")
    assert post["caption"] == "#été 👗 tab\there"


def test_naive_dates_are_utc():
    post = _validate(posted_at="2024-01-01T10:00:00", downloaded_at="2024-03-01")
    assert post["posted_at_unix"] == int(datetime.datetime(2024, 1, 1, 10, tzinfo=datetime.timezone.utc).timestamp())


@pytest.mark.parametrize("changes, reason", [
    ({"posted_at": "2024-02-15T10:00:00Z"}, reasons.FILTER_TOO_RECENT),
    ({"caption": "#a one two three four five six"}, reasons.FILTER_CAPTION_TOO_LONG),
    ({"caption": "#a hi @friend"}, reasons.FILTER_CAPTION_MENTION),
    ({"caption": "no tags here"}, reasons.FILTER_CAPTION_NO_HASHTAG),
    ({"caption": "# alone"}, reasons.FILTER_CAPTION_NO_HASHTAG),
    ({"caption": DROP}, reasons.FILTER_CAPTION_NO_HASHTAG),
    ({"posted_at": DROP}, reasons.MISSING_FIELD),
])
def test_paper_filters(changes, reason):
    post = _validate(**changes)
    with pytest.raises(Rejected) as info:
        metadata.apply_filters(post)
    assert info.value.reason == reason


def test_filters_can_be_switched_off():
    post = _validate(posted_at="2024-02-28T10:00:00Z", caption="@x no tags at all in this long caption")
    assert metadata.apply_filters(post, filter_age=False, filter_caption=False) is post
    assert metadata.apply_filters(_validate(caption="#a 1 2 3 4 5 6 7"), max_caption_words=10)
    assert metadata.apply_filters(_validate(posted_at="2024-02-20T10:00:00Z"), min_age_days=5)


def test_jsonl_records_keep_line_numbers_and_reasons():
    data = ("\ufeff" + json.dumps(GOOD) + "\n\n{not json}\n[1, 2]\n").encode("utf-8") + b"\xff\xfe{}\n" + b'{"a": 1}'
    records = list(metadata.iter_jsonl(data))
    assert [r.line for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r.index for r in records] == [0, 1, 2, 3, 4, 5]
    assert [r.reason for r in records] == [None, reasons.EMPTY_LINE, reasons.MALFORMED_LINE,
                                           reasons.NOT_AN_OBJECT, reasons.ENCODING_ERROR, None]
    assert records[0].fields["post_id"] == "p1"  # the BOM did not break the first line
    assert "line 3" in records[2].message


def test_jsonl_crlf_and_no_trailing_newline():
    data = (json.dumps(GOOD) + "\r\n" + json.dumps({**GOOD, "post_id": "p2"})).encode()
    records = list(metadata.iter_jsonl(data))
    assert [r.fields["post_id"] for r in records] == ["p1", "p2"]


def test_csv_with_bom_quoted_newlines_and_bad_rows():
    text = ("\ufeffimage,post_id,likes,caption,posted_at,downloaded_at\n"
            'images/a.png,p1,5,"#a\nsecond line",2024-01-01T00:00:00Z,2024-03-01T00:00:00Z\n'
            "images/b.png,p2,7\n"
            "\n"
            "images/c.png,p3,x,#c,,\n")
    records = list(metadata.iter_csv(text.encode("utf-8")))
    assert len(records) == 4
    assert records[0].fields["caption"] == "#a\nsecond line" and records[0].line == 2
    assert records[1].reason == reasons.MALFORMED_LINE and records[1].line == 4
    assert records[2].reason == reasons.EMPTY_LINE
    post = metadata.validate_record(records[0].fields, from_csv=True, now=NOW)
    assert post["likes"] == 5
    with pytest.raises(Rejected) as info:
        metadata.validate_record(records[3].fields, from_csv=True, now=NOW)
    assert info.value.reason == reasons.INVALID_FIELD and "likes" in info.value.message
    # empty optional CSV cells are "not given", not invalid
    assert metadata.validate_record(records[3].fields | {"likes": "3"}, from_csv=True, now=NOW)["posted_at_unix"] is None


def test_reject_entry_keeps_the_original_record():
    record = metadata.RawRecord(index=4, line=5, text='{"x": 1}')
    entry = metadata.reject_entry(record, reasons.MISSING_FIELD, "required field 'image' is missing", post_id="p9")
    assert entry == {"index": 4, "line": 5, "reason": "missing_field", "post_id": "p9",
                     "message": "required field 'image' is missing", "record": '{"x": 1}'}


def test_rejected_refuses_unknown_reason_codes():
    with pytest.raises(ValueError):
        Rejected("because", "no")
