"""Popularity-discriminable image pairs (PDIPs): the pair rule as pure functions, no Beam.

The rule (after Ding et al. 2019; `PairsConfig` holds its settings):

* popularity `p = log(1 + likes) - log(1 + followers)`: likes normalised by the audience that saw
  the post. A post without a follower count is treated as having 0 followers, so its popularity is
  plain `log(1 + likes)`; such posts are only ever compared with posts of the *same user*, and a
  user's follower count rarely changes much between posts, so the missing normalisation mostly
  cancels out within a pair.
* two posts are a candidate pair when they have the same (non-empty) `user_id`, both have a
  `posted_at` time, they were posted at most `window_days` apart, and their popularities differ by
  at least `min_log_margin` (a difference exactly at either threshold counts). `A` is the more
  popular post, `B` the less popular one. Posts with equal popularity never pair, even with a
  margin of 0: such a pair says nothing about which image is better.
* `select_pairs` then keeps a subset in which every image takes part in at most
  `max_pairs_per_image` pairs, so that no prolific image dominates training. Candidates are visited
  in the order of a SHA-256 hash of `(seed, post id, post id)` and accepted greedily while both of
  their images have room. The hash depends only on the seed and the two ids, never on the order
  the posts arrived in, Python's per-process `hash()` salt or the runner, so the same seed gives
  the same pairs everywhere; another seed gives another, equally fair, sample.

Posts are plain dicts with at least `post_id`, `user_id` ("" or None: unknown), `likes`,
`followers` (None: unknown) and `posted_at_unix` (seconds since 1970, None: unknown), as
`pop_tf.records.decode_post` returns them.
"""

import collections
import hashlib
import json
import math
from typing import Iterable, NamedTuple, Optional

SECONDS_PER_DAY = 86400.0
# Popularities are differences of logarithms; a margin that is mathematically equal to the threshold
# may come out a few ulps below it (log1p(1) vs log(2)). This slack keeps "exactly at the threshold
# counts" true for such pairs without admitting any pair that is meaningfully below it.
MARGIN_TOLERANCE = 1e-9


class Candidate(NamedTuple):
    """A pair that satisfies the rule: `post_id_a` is the more popular post of `user_id`."""

    post_id_a: str
    post_id_b: str
    user_id: str
    margin: float  # p_a - p_b > 0
    seconds_apart: float


def popularity(likes: int, followers: Optional[int]) -> float:
    """`log(1 + likes) - log(1 + followers)`; unknown followers count as 0 (see the module doc)."""
    if likes is None or likes < 0:
        raise ValueError(f"likes must be a count >= 0, got {likes!r}")
    if followers is not None and followers < 0:
        raise ValueError(f"followers must be a count >= 0 or None, got {followers!r}")
    return math.log1p(likes) - math.log1p(followers or 0)


def can_pair(post: dict) -> bool:
    """Whether a post can be in any pair at all: it needs a user and a posting time."""
    return bool(post.get("user_id")) and post.get("posted_at_unix") is not None


def candidate_pairs(posts: Iterable[dict], window_days: float, min_log_margin: float) -> list:
    """Every pair of `posts` that satisfies the rule, as `Candidate`s sorted by (user, A, B).

    Posts of different users are never paired, so this may be given one user's posts (as the Beam
    job does) or any mix. Posts that cannot pair (`can_pair`) are skipped.
    """
    window_seconds = window_days * SECONDS_PER_DAY
    by_user = collections.defaultdict(list)
    for post in posts:
        if can_pair(post):
            by_user[post["user_id"]].append(post)
    candidates = []
    for user_id in sorted(by_user):
        # Sorted by time, the posts within the window of post i are a run right after it, so the
        # inner loop stops at the first post that is too late instead of visiting all n² pairs.
        user_posts = sorted(by_user[user_id], key=lambda p: (p["posted_at_unix"], p["post_id"]))
        scores = [popularity(p["likes"], p["followers"]) for p in user_posts]
        for i, first in enumerate(user_posts):
            for j in range(i + 1, len(user_posts)):
                second = user_posts[j]
                apart = second["posted_at_unix"] - first["posted_at_unix"]
                if apart > window_seconds:
                    break
                margin = abs(scores[i] - scores[j])
                if margin == 0.0 or margin < min_log_margin - MARGIN_TOLERANCE:
                    continue
                a, b = (first, second) if scores[i] > scores[j] else (second, first)
                candidates.append(Candidate(a["post_id"], b["post_id"], user_id, margin, float(apart)))
    candidates.sort(key=lambda c: (c.user_id, c.post_id_a, c.post_id_b))
    return candidates


def pair_order_key(seed: int, post_id_1: str, post_id_2: str) -> tuple:
    """The position of a pair in the greedy visiting order: a hash of the seed and both ids.

    The ids are sorted first so the key does not depend on which post is A, and JSON-encoded so
    that no choice of characters in an id can make two different pairs hash the same input. The
    ids themselves follow the hash as a tie-breaker, which makes the order total.
    """
    low, high = sorted((post_id_1, post_id_2))
    digest = hashlib.sha256(json.dumps([int(seed), low, high]).encode("utf-8")).digest()
    return digest[:16], low, high


def select_pairs(candidates: Iterable[Candidate], max_pairs_per_image: int, seed: int) -> list:
    """A subset of `candidates` in which no image is in more than `max_pairs_per_image` pairs.

    Greedy in the seeded hash order of `pair_order_key` (see the module doc); the result does not
    depend on the order of `candidates` and is sorted by (user, A, B).
    """
    if max_pairs_per_image < 1:
        raise ValueError(f"max_pairs_per_image must be >= 1, got {max_pairs_per_image!r}")
    ordered = sorted(candidates, key=lambda c: pair_order_key(seed, c.post_id_a, c.post_id_b))
    used = collections.Counter()
    chosen = []
    for candidate in ordered:
        if used[candidate.post_id_a] < max_pairs_per_image and used[candidate.post_id_b] < max_pairs_per_image:
            used[candidate.post_id_a] += 1
            used[candidate.post_id_b] += 1
            chosen.append(candidate)
    chosen.sort(key=lambda c: (c.user_id, c.post_id_a, c.post_id_b))
    return chosen
