"""Pure functions from metadata lines to validated post dicts, testable without Beam.

The input contract and the paper filters: docs/architecture.md, Input contract.

`iter_raw_records` turns a `metadata.jsonl` / `metadata.csv` file into one `RawRecord` per input
record (a JSON line or a CSV row, which may span several physical lines); `validate_record`
checks the contract and `apply_filters` the paper's filters. Both raise `Rejected` with a specific
reason code; nothing is dropped silently.

The file is untrusted input, so parsing never raises: whatever a line holds (JSON nested
thousands deep, numbers with thousands of digits, lone UTF-16 surrogates, NUL bytes, CSV fields
past the csv module's limit) it becomes exactly one `RawRecord`, either parsed or carrying a
reason. A file in UTF-16 or UTF-32 (with a byte-order mark, or recognised by its NUL bytes) is
transcoded to UTF-8 first, see `detect_encoding`.
"""

import codecs
import csv
import dataclasses
import datetime
import io
import json
import logging
import math
import posixpath
import re
import sys
import unicodedata
from typing import Iterator, Optional

from pop_tf.beam import reasons
from pop_tf.beam.reasons import Rejected

METADATA_NAMES = ("metadata.jsonl", "metadata.csv")
CONTRACT_FIELDS = ("image", "post_id", "likes", "user_id", "followers", "comments", "caption",
                   "posted_at", "downloaded_at", "content_type")
MAX_COUNT = 10**12  # likes/followers/comments above this are data errors, not stars
MAX_ID_CHARS = 256
# The whole metadata file is held in memory (by the driver to count records, by one worker to
# parse them), so its size is bounded before it is read; above this, split the dataset.
MAX_METADATA_BYTES = 1 << 30
# Real metadata nests a few levels (extras such as {"tags": [...]}); far deeper nesting is an
# attack on the recursive JSON parser and encoder (RecursionError) and is refused unparsed.
MAX_JSON_DEPTH = 64
log = logging.getLogger("pop_tf.ingest")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)
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


# Byte-order marks, longest first: the UTF-32-LE mark begins with the UTF-16-LE one.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
_SNIFF_BYTES = 4096
# Undecodable UTF-16/32 units become this lone surrogate, which is not valid UTF-8 once
# transcoded, so the one line holding them is rejected as ENCODING_ERROR instead of the file.
_MARK_ERRORS = "pop_tf.metadata.mark"
codecs.register_error(_MARK_ERRORS, lambda e: ("\udcff", e.end))


def detect_encoding(data: bytes) -> Optional[tuple[str, bool]]:
    """(codec, has_bom) when `data` is UTF-16 or UTF-32 rather than the contract's UTF-8.

    Detected by a byte-order mark, or without one by the NUL bytes that mostly-ASCII text has
    in UTF-16/32: in UTF-16-LE nearly every odd byte is 0 and almost no even byte is. Valid UTF-8
    metadata does not look like that (JSON cannot hold a raw NUL, and CSV exports hardly ever
    do), so the guess does not misfire on real UTF-8 files. None for UTF-8 (with or without its
    BOM).
    """
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return codec, True
    sample = data[:_SNIFF_BYTES]
    for width, endian in ((4, "le"), (4, "be"), (2, "le"), (2, "be")):
        units = len(sample) // width
        if units < 2:
            continue
        # Offset of the byte that holds an ASCII character within each code unit.
        low = 0 if endian == "le" else width - 1
        nul_low = sum(sample[i * width + low] == 0 for i in range(units)) / units
        nul_high = sum(sample[i * width + j] == 0 for i in range(units) for j in range(width) if j != low)
        # UTF-16-BE text also has 2 NULs in every 4 bytes, so UTF-32 needs (nearly) all of them.
        if nul_low <= 0.05 and nul_high / (units * (width - 1)) >= (0.9 if width == 4 else 0.6):
            return f"utf-{width * 8}-{endian}", False
    return None


def _to_utf8(data: bytes) -> tuple[bytes, Optional[str]]:
    """`data` as UTF-8 bytes, transcoded from UTF-16/32 when `detect_encoding` says so."""
    found = detect_encoding(data)
    if found is None:
        return data, None
    codec, has_bom = found
    if has_bom:
        data = data[len(next(b for b, c in _BOMS if c == codec)):]
    text = data.decode(codec, errors=_MARK_ERRORS)
    return text.encode("utf-8", errors="surrogatepass"), codec


def _decode(raw: bytes, line: int, source: str = "UTF-8"):
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        where = f"{e.reason} at byte {e.start}" if source == "UTF-8" else e.reason
        return raw.decode("utf-8", errors="replace"), f"line {line}: bytes are not {source} ({where})"


def _json_depth(text: str, limit: int) -> int:
    """Deepest nesting of [ and { in a JSON text, outside strings; stops counting above `limit`.

    Counted without recursion before parsing, because the parser itself is recursive.
    """
    if text.count("[") + text.count("{") <= limit:
        return 0  # cannot be deeper than its number of openers; the common case costs two counts
    depth = deepest = 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
        elif token in "]}":
            depth -= 1
    return deepest


def _bad_string(value) -> Optional[str]:
    """Where in a parsed record a string (or key) holds a lone surrogate, else None.

    JSON can escape half of a UTF-16 pair ("\\ud800"), which Python accepts but which no UTF-8
    writer (TFRecords, rejects.jsonl, the filesystem) can encode. Walked without recursion.
    """
    stack = [(value, None)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return where or "the record"
        elif isinstance(item, dict):
            for key, child in item.items():
                name = f"field {key!r}" if where is None else where
                if isinstance(key, str) and _SURROGATE.search(key):
                    return f"a field name ({key!r})" if where is None else f"a key inside {where}"
                stack.append((child, name))
        elif isinstance(item, list):
            stack.extend((child, where) for child in item)
    return None


def _surrogate_message(line: int, where: str) -> str:
    return (f"line {line}: {where} holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape), "
            f"which is not valid Unicode text")


def _parse_json_line(text: str, line: int):
    """(fields, reason, message) for one non-empty JSON line; never raises."""
    depth = _json_depth(text, MAX_JSON_DEPTH)
    if depth > MAX_JSON_DEPTH:
        return None, reasons.MALFORMED_LINE, (
            f"line {line} nests JSON arrays/objects more than {MAX_JSON_DEPTH} levels deep (the limit)")
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as e:
        return None, reasons.MALFORMED_LINE, f"line {line} is not valid JSON: {e.msg} at column {e.colno}"
    except ValueError as e:  # Python refuses integers longer than its int_max_str_digits
        if "digits" in str(e):
            return None, reasons.MALFORMED_LINE, (
                f"line {line} has a number with more than {sys.get_int_max_str_digits()} digits")
        return None, reasons.MALFORMED_LINE, f"line {line} is not valid JSON: {e}"
    except RecursionError:  # the depth scan above should make this unreachable
        return None, reasons.MALFORMED_LINE, f"line {line} nests JSON too deeply to parse"
    if not isinstance(fields, dict):
        return None, reasons.NOT_AN_OBJECT, f"line {line} is JSON {type(fields).__name__}, not an object"
    where = _bad_string(fields)
    if where:
        return None, reasons.ENCODING_ERROR, _surrogate_message(line, where)
    return fields, None, None


def iter_jsonl(data: bytes, source: str = "UTF-8") -> Iterator[RawRecord]:
    """One RawRecord per line of UTF-8 JSON Lines; `source` names the file's encoding in messages."""
    if data.startswith(codecs.BOM_UTF8):  # a BOM written by some editors and Excel exports
        data = data[3:]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the last line does not start a new record
    for i, raw in enumerate(lines):
        line = i + 1
        text = ""
        try:
            text, error = _decode(raw.rstrip(b"\r"), line, source)
            if error:
                yield RawRecord(i, line, text, reason=reasons.ENCODING_ERROR, message=error)
            elif not text.strip():
                yield RawRecord(i, line, text, reason=reasons.EMPTY_LINE, message=f"line {line} is empty")
            else:
                fields, reason, message = _parse_json_line(text, line)
                yield RawRecord(i, line, text, fields=fields, reason=reason, message=message)
        except Exception as e:  # noqa: BLE001 - one line must never abort the job; this is a bug trap
            log.warning("line %d of the metadata could not be parsed", line, exc_info=True)
            yield RawRecord(i, line, text, reason=reasons.MALFORMED_LINE,
                            message=f"line {line} could not be parsed ({type(e).__name__})")


def _csv_rows(text: str):
    """(line, row or csv.Error) for each CSV row; the reader survives errors and never loops."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=False)
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield line, e
            if reader.line_num < line:  # nothing consumed: a reader that cannot advance has ended
                return
            continue
        yield line, row


def iter_csv(data: bytes, source: str = "UTF-8") -> Iterator[RawRecord]:
    """CSV rows (quoted newlines allowed) keyed by the header row; values stay strings."""
    text = data.decode("utf-8-sig", errors="surrogateescape")
    header = None
    index = 0
    for line, row in _csv_rows(text):
        if isinstance(row, csv.Error):
            yield RawRecord(index, line, "", reason=reasons.MALFORMED_LINE,
                            message=f"line {line} is not a valid CSV row: {row}")
            index += 1
            continue
        if header is None:
            header = [h.strip() for h in row]
            continue
        joined = ""
        try:
            joined = ",".join(row)
            if _SURROGATE.search(joined):
                yield RawRecord(index, line, joined.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                                reason=reasons.ENCODING_ERROR, message=f"line {line}: bytes are not {source}")
            elif not row or all(not v.strip() for v in row):
                yield RawRecord(index, line, joined, reason=reasons.EMPTY_LINE,
                                message=f"line {line} is empty")
            elif len(row) != len(header):
                yield RawRecord(index, line, joined, reason=reasons.MALFORMED_LINE,
                                message=f"line {line} has {len(row)} fields but the header has {len(header)}")
            elif any(_SURROGATE.search(h) for h in header):
                yield RawRecord(index, line, joined, reason=reasons.ENCODING_ERROR,
                                message=f"line {line}: the header row's column names are not {source}")
            else:
                fields = {k: v for k, v in zip(header, row)
                          if not (k not in ("image", "post_id", "likes") and v == "")}
                yield RawRecord(index, line, joined, fields=fields)
        except Exception as e:  # noqa: BLE001 - one row must never abort the job; this is a bug trap
            log.warning("line %d of the metadata could not be parsed", line, exc_info=True)
            yield RawRecord(index, line, joined.encode("utf-8", "replace").decode("utf-8"),
                            reason=reasons.MALFORMED_LINE,
                            message=f"line {line} could not be parsed ({type(e).__name__})")
        index += 1


def iter_raw_records(path: str, data: bytes) -> Iterator[RawRecord]:
    """Every record of a metadata file; `path` only decides the format (by its extension).

    UTF-16/32 files (`detect_encoding`) are transcoded to UTF-8 first; the caller warns about
    them once per file (`describe_encoding`).
    """
    data, codec = _to_utf8(data)
    source = codec.upper() if codec else "UTF-8"
    if path.endswith(".csv"):
        return iter_csv(data, source)
    return iter_jsonl(data, source)


def describe_encoding(path: str, data: bytes) -> Optional[str]:
    """One sentence about a metadata file that is not UTF-8 but was read anyway, else None."""
    found = detect_encoding(data)
    if found is None:
        return None
    codec, has_bom = found
    how = "by its byte-order mark" if has_bom else "by its NUL bytes, without a byte-order mark"
    return (f"metadata file {path} is encoded as {codec.upper()} (recognised {how}), not UTF-8 as the input "
            f"contract says; it was read as {codec.upper()}: convert it to UTF-8 "
            f"(e.g. iconv -f {codec.upper()} -t UTF-8) so other tools read it too")


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
    # NFC: the same id typed on macOS (NFD) and elsewhere (NFC) is one id, so it dedupes as one.
    value = unicodedata.normalize("NFC", str(value))
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

    Ids (post_id, user_id) are returned in Unicode normal form NFC.
    """
    where = _bad_string(fields)
    if where:  # parsing already rejects these; a caller may hand over a dict it built itself
        raise Rejected(reasons.ENCODING_ERROR, f"{where} holds a lone UTF-16 surrogate, which is not valid Unicode text")
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
    """The paper's filters (docs/architecture.md, Input contract). Returns the post or raises `Rejected`."""
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
