"""Reject reason codes: the one vocabulary shared by ingest, its stats and the synthetic dataset.

Every input record that does not become a training example ends in `rejects.jsonl` with exactly
one of these codes and a human sentence. The codes are stable API: downstream dashboards and
`stats.json` consumers key on them.
"""

# Record-level problems (found before any image is read).
EMPTY_LINE = "empty_line"
MALFORMED_LINE = "malformed_line"  # not valid JSON / CSV, JSON nested too deep, a number too long
ENCODING_ERROR = "encoding_error"  # bytes not in the file's encoding, a lone UTF-16 surrogate
NOT_AN_OBJECT = "not_an_object"  # valid JSON, but not an object
MISSING_FIELD = "missing_field"
INVALID_FIELD = "invalid_field"  # wrong type, negative/NaN/huge count, empty id, ...
INVALID_DATE = "invalid_date"  # unparsable date, post after download, date in the future
UNSAFE_PATH = "unsafe_path"  # absolute path, '..' or a symlink escaping the dataset root
DUPLICATE_POST_ID = "duplicate_post_id"

# Paper filters (each switchable in IngestConfig).
FILTER_TOO_RECENT = "filter_too_recent"
FILTER_CAPTION_TOO_LONG = "filter_caption_too_long"
FILTER_CAPTION_NO_HASHTAG = "filter_caption_no_hashtag"
FILTER_CAPTION_MENTION = "filter_caption_mention"

# Image problems (found while reading, before full decoding where possible).
MISSING_FILE = "missing_file"
EMPTY_FILE = "empty_file"
FILE_TOO_LARGE = "file_too_large"
NOT_AN_IMAGE = "not_an_image"  # also a directory, FIFO, device or socket
UNSUPPORTED_FORMAT = "unsupported_format"
CORRUPT_IMAGE = "corrupt_image"  # truncated or undecodable
DECOMPRESSION_BOMB = "decompression_bomb"
IMAGE_TOO_SMALL = "image_too_small"
EXTREME_ASPECT = "extreme_aspect"

# Duplicates of images (after decoding; the record with the smaller sort key survives).
DUPLICATE_IMAGE = "duplicate_image"
NEAR_DUPLICATE_IMAGE = "near_duplicate_image"

ALL = (
    EMPTY_LINE, MALFORMED_LINE, ENCODING_ERROR, NOT_AN_OBJECT, MISSING_FIELD, INVALID_FIELD,
    INVALID_DATE, UNSAFE_PATH, DUPLICATE_POST_ID, FILTER_TOO_RECENT, FILTER_CAPTION_TOO_LONG,
    FILTER_CAPTION_NO_HASHTAG, FILTER_CAPTION_MENTION, MISSING_FILE, EMPTY_FILE, FILE_TOO_LARGE,
    NOT_AN_IMAGE, UNSUPPORTED_FORMAT, CORRUPT_IMAGE, DECOMPRESSION_BOMB, IMAGE_TOO_SMALL,
    EXTREME_ASPECT, DUPLICATE_IMAGE, NEAR_DUPLICATE_IMAGE,
)


class Rejected(Exception):
    """Raised by the pure record/image functions; ingest turns it into a rejects.jsonl line.

    Args:
      reason: one of the codes in this module.
      message: a sentence a person can act on (what was wrong, and with which field or file).
    """

    def __init__(self, reason, message):
        if reason not in ALL:
            raise ValueError(f"unknown reject reason {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message
