"""Pure functions from metadata lines to validated post dicts (SPEC §3), testable without Beam.

`iter_raw_records` turns a `metadata.jsonl` / `metadata.csv` file into one `RawRecord` per input
record (a JSON line or a CSV row, which may span several physical lines); `validate_record`
checks the contract and `apply_filters` the paper's filters. Both raise `Rejected` with a specific
reason code; nothing is dropped silently.
"""

import csv
import dataclasses
import datetime
import io
import json
import math
import posixpath
import re
from typing import Iterator, Optional

from pop_tf.beam import reasons
from pop_tf.beam.reasons import Rejected

METADATA_NAMES = ("metadata.jsonl", "metadata.csv")
CONTRACT_FIELDS = ("image", "post_id", "likes", "user_id", "followers", "comments", "caption",
                   "posted_at", "downloaded_at", "content_type")
MAX_COUNT = 10**12  # likes/followers/comments above this are data errors, not stars
MAX_ID_CHARS = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@dataclasses.dataclass(frozen=True)
class RawRecord:
    """One input record before validation.

    Args:
      index: 0-based record number in the metadata file (the stable order of the input).
      line: 1-based physical line where the record starts (what a person looks up).
      text: the record as it appeared (a JSON line, or a CSV row re-joined).
      fields: the parsed object, or None when the record could not be parsed.
      reason, message: why it could not be parsed (None when it was).
    """

    index: int
    line: int
    text: str
    fields: Optional[dict] = None
    reason: Optional[str] = None
    message: Optional[str] = None


def _decode(raw: bytes, line: int):
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return raw.decode("utf-8", errors="replace"), f"line {line}: bytes are not UTF-8 ({e.reason} at byte {e.start})"


def iter_jsonl(data: bytes) -> Iterator[RawRecord]:
    if data.startswith(b"\xef\xbb\xbf"):  # a BOM written by some editors and Excel exports
        data = data[3:]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the last line does not start a new record
    for i, raw in enumerate(lines):
        line = i + 1
        text, error = _decode(raw.rstrip(b"\r"), line)
        if error:
            yield RawRecord(i, line, text, reason=reasons.ENCODING_ERROR, message=error)
        elif not text.strip():
            yield RawRecord(i, line, text, reason=reasons.EMPTY_LINE,
                            message=f"line {line} is empty")
        else:
            try:
                fields = json.loads(text)
            except json.JSONDecodeError as e:
                yield RawRecord(i, line, text, reason=reasons.MALFORMED_LINE,
                                message=f"line {line} is not valid JSON: {e.msg} at column {e.colno}")
                continue
            if not isinstance(fields, dict):
                yield RawRecord(i, line, text, reason=reasons.NOT_AN_OBJECT,
                                message=f"line {line} is JSON {type(fields).__name__}, not an object")
            else:
                yield RawRecord(i, line, text, fields=fields)


def iter_csv(data: bytes) -> Iterator[RawRecord]:
    """CSV rows (quoted newlines allowed) keyed by the header row; values stay strings."""
    text = data.decode("utf-8-sig", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""), strict=False)
    header = None
    index = 0
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield RawRecord(index, line, "", reason=reasons.MALFORMED_LINE,
                            message=f"line {line} is not a valid CSV row: {e}")
            index += 1
            continue
        if header is None:
            header = [h.strip() for h in row]
            continue
        joined = ",".join(row)
        if any("\udc80" <= ch <= "\udcff" for ch in joined):
            yield RawRecord(index, line, joined.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                            reason=reasons.ENCODING_ERROR, message=f"line {line}: bytes are not UTF-8")
        elif not row or all(not v.strip() for v in row):
            yield RawRecord(index, line, joined, reason=reasons.EMPTY_LINE,
                            message=f"line {line} is empty")
        elif len(row) != len(header):
            yield RawRecord(index, line, joined, reason=reasons.MALFORMED_LINE,
                            message=f"line {line} has {len(row)} fields but the header has {len(header)}")
        else:
            fields = {k: v for k, v in zip(header, row) if not (k not in ("image", "post_id", "likes") and v == "")}
            yield RawRecord(index, line, joined, fields=fields)
        index += 1


def iter_raw_records(path: str, data: bytes) -> Iterator[RawRecord]:
    """Every record of a metadata file; `path` only decides the format (by its extension)."""
    if path.endswith(".csv"):
        return iter_csv(data)
    return iter_jsonl(data)


def _parse_count(name: str, value, from_csv: bool, required: bool) -> Optional[int]:
    if value is None or (from_csv and value == ""):
        if required:
            raise Rejected(reasons.MISSING_FIELD, f"required field '{name}' is missing")
        return None
    if from_csv and isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise Rejected(reasons.INVALID_FIELD,
                           f"field '{name}' must be a whole number >= 0, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Rejected(reasons.INVALID_FIELD,
                       f"field '{name}' must be a whole number >= 0, got {type(value).__name__} {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise Rejected(reasons.INVALID_FIELD, f"field '{name}' must be a whole number >= 0, got {value!r}")
        value = int(value)
    if value < 0:
        raise Rejected(reasons.INVALID_FIELD, f"field '{name}' must be >= 0, got {value}")
    if value > MAX_COUNT:
        raise Rejected(reasons.INVALID_FIELD, f"field '{name}' is implausibly large ({value} > {MAX_COUNT})")
    return value


def _parse_id(name: str, value, required: bool) -> Optional[str]:
    if value is None:
        if required:
            raise Rejected(reasons.MISSING_FIELD, f"required field '{name}' is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Rejected(reasons.INVALID_FIELD, f"field '{name}' must be a string, got {type(value).__name__}")
    value = str(value)
    if not value.strip():
        raise Rejected(reasons.INVALID_FIELD, f"field '{name}' is empty")
    if len(value) > MAX_ID_CHARS or _CONTROL.search(value):
        raise Rejected(reasons.INVALID_FIELD,
                       f"field '{name}' must be at most {MAX_ID_CHARS} printable characters")
    return value


def _parse_time(name: str, value) -> Optional[datetime.datetime]:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Rejected(reasons.INVALID_DATE, f"field '{name}' must be an ISO-8601 string, got {value!r}")
    try:
        parsed = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        raise Rejected(reasons.INVALID_DATE, f"field '{name}' is not an ISO-8601 date: {value!r}") from None
    if parsed.tzinfo is None:  # dates without a zone are read as UTC, the scrapers' convention
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed


def normalise_image_path(value) -> str:
    """A safe dataset-relative POSIX path, or `Rejected` (absolute, scheme, '..', control chars)."""
    if value is None:
        raise Rejected(reasons.MISSING_FIELD, "required field 'image' is missing")
    if not isinstance(value, str) or not value.strip():
        raise Rejected(reasons.INVALID_FIELD, "field 'image' must be a non-empty relative path")
    if _CONTROL.search(value):
        raise Rejected(reasons.INVALID_FIELD, "field 'image' contains control characters")
    path = value.strip().replace("\\", "/")
    if path.startswith("/") or _SCHEME.match(path):
        raise Rejected(reasons.UNSAFE_PATH,
                       f"image path {value!r} is absolute; paths must be relative to the dataset root")
    normal = posixpath.normpath(path)
    if normal == ".." or normal.startswith("../"):
        raise Rejected(reasons.UNSAFE_PATH, f"image path {value!r} escapes the dataset root")
    return normal


def validate_record(fields: dict, from_csv: bool = False, now: Optional[datetime.datetime] = None) -> dict:
    """Checks one parsed record against the input contract and returns a normalised post dict.

    Args:
      fields: the parsed JSON object or CSV row.
      from_csv: CSV values are strings, so numbers are parsed from text; JSON numbers must be
        numbers (a string "12" for likes is a data error there).
      now: the time after which dates count as "in the future" (default: now, UTC).
    """
    post = {
        "image": normalise_image_path(fields.get("image")),
        "post_id": _parse_id("post_id", fields.get("post_id"), required=True),
        "likes": _parse_count("likes", fields.get("likes"), from_csv, required=True),
        "user_id": _parse_id("user_id", fields.get("user_id"), required=False),
        "followers": _parse_count("followers", fields.get("followers"), from_csv, required=False),
        "comments": _parse_count("comments", fields.get("comments"), from_csv, required=False),
    }
    for name in ("caption", "content_type"):
        value = fields.get(name)
        if value is not None and not isinstance(value, str):
            raise Rejected(reasons.INVALID_FIELD, f"field '{name}' must be a string, got {type(value).__name__}")
        post[name] = value or ""
    posted = _parse_time("posted_at", fields.get("posted_at"))
    downloaded = _parse_time("downloaded_at", fields.get("downloaded_at"))
    now = now or datetime.datetime.now(datetime.timezone.utc)
    for name, value in (("posted_at", posted), ("downloaded_at", downloaded)):
        if value is not None and value > now + datetime.timedelta(days=1):
            raise Rejected(reasons.INVALID_DATE, f"field '{name}' is in the future: {value.isoformat()}")
    if posted and downloaded and posted > downloaded:
        raise Rejected(reasons.INVALID_DATE,
                       f"posted_at {posted.isoformat()} is after downloaded_at {downloaded.isoformat()}")
    post["posted_at_unix"] = int(posted.timestamp()) if posted else None
    post["downloaded_at_unix"] = int(downloaded.timestamp()) if downloaded else None
    post["extra"] = {k: v for k, v in fields.items() if k not in CONTRACT_FIELDS}
    return post


def apply_filters(post: dict, *, filter_age=True, min_age_days=30, filter_caption=True,
                  max_caption_words=6) -> dict:
    """The paper's filters (SPEC §3). Returns the post unchanged or raises `Rejected`."""
    if filter_age:
        for name in ("posted_at", "downloaded_at"):
            if post[f"{name}_unix"] is None:
                raise Rejected(reasons.MISSING_FIELD,
                               f"field '{name}' is needed by the age filter (switch it off with ingest.filter_age=false)")
        age_days = (post["downloaded_at_unix"] - post["posted_at_unix"]) / 86400.0
        if age_days < min_age_days:
            raise Rejected(reasons.FILTER_TOO_RECENT,
                           f"posted {age_days:.1f} days before download; the age filter needs at least "
                           f"{min_age_days} days for likes to settle")
    if filter_caption:
        caption = post["caption"]
        words = caption.split()
        if len(words) > max_caption_words:
            raise Rejected(reasons.FILTER_CAPTION_TOO_LONG,
                           f"caption has {len(words)} words; the caption filter allows at most {max_caption_words}")
        if "@" in caption:
            raise Rejected(reasons.FILTER_CAPTION_MENTION, "caption mentions another account ('@')")
        if not any(w.startswith("#") and len(w) > 1 for w in words):
            raise Rejected(reasons.FILTER_CAPTION_NO_HASHTAG, "caption has no #hashtag")
    return post


def reject_entry(record: RawRecord, reason: str, message: str, post_id: Optional[str] = None) -> dict:
    """One `rejects.jsonl` object: where the record was, what it was, why it was rejected."""
    entry = {"index": record.index, "line": record.line, "reason": reason, "message": message,
             "record": record.text}
    if post_id is not None:
        entry["post_id"] = post_id
    return entry
