"""Tests of the popularity uplift summary (pop_tf.metrics.uplift), on hand-computed values."""

import math

import numpy as np
import pytest

from pop_tf.metrics.uplift import ROW_KEYS, compare_modes, popularity_uplift


def test_summary_matches_hand_computed_values():
    before = [-1.0, 0.5, 2.0, 0.0]
    after = [0.0, 1.5, 1.0, 0.0]
    # Uplifts 1, 1, -1, 0: mean 0.25, median 0.5, sample std sqrt(2.75/3).
    result = popularity_uplift(before, after)
    assert result["mean_uplift"] == pytest.approx(0.25)
    assert result["median_uplift"] == pytest.approx(0.5)
    assert result["stderr"] == pytest.approx(math.sqrt(2.75 / 3) / 2)
    assert result["share_improved"] == pytest.approx(0.5)  # 0 → 0 is not an improvement
    assert result["share_above_1"] == pytest.approx(0.25)  # only 1.5; 1.0 is not above 1
    assert result["share_above_threshold"] == pytest.approx(0.25)
    assert result["share_above_threshold_before"] == pytest.approx(0.25)
    assert result["threshold"] == 1.0
    assert result["mean_before"] == pytest.approx(0.375)
    assert result["mean_after"] == pytest.approx(0.625)
    assert result["count"] == 4
    assert all(type(v) is float for k, v in result.items() if k != "count")
    assert type(result["count"]) is int


def test_threshold_applies_to_scores_and_share_above_1_stays_at_1():
    result = popularity_uplift(np.array([0.0, 0.0, 0.0]), np.array([0.2, 0.6, 1.2]),
                               threshold=0.5)
    assert result["share_above_threshold"] == pytest.approx(2 / 3)
    assert result["share_above_1"] == pytest.approx(1 / 3)
    assert result["share_above_threshold_before"] == 0.0
    assert result["threshold"] == 0.5


def test_single_pair_has_undefined_stderr():
    result = popularity_uplift([1.0], [2.5])
    assert result["mean_uplift"] == pytest.approx(1.5) and math.isnan(result["stderr"])


@pytest.mark.parametrize("before, after, message", [
    ([1.0, 2.0], [1.0], "2 scores but scores_after has 1"),
    ([], [], "empty"),
    ([1.0, np.nan], [1.0, 2.0], "non-finite"),
    ([1.0, 2.0], [np.inf, 2.0], "non-finite"),
    ([[1.0, 2.0]], [[1.0, 2.0]], "1-D"),
    (["a"], ["b"], "numbers"),
])
def test_bad_scores_give_clear_errors(before, after, message):
    with pytest.raises(ValueError, match=message):
        popularity_uplift(before, after)


def test_non_finite_threshold_is_an_error():
    with pytest.raises(ValueError, match="threshold"):
        popularity_uplift([0.0], [1.0], threshold=float("nan"))


def test_compare_modes_builds_one_row_per_mode_in_order():
    style = popularity_uplift([0.0, 0.0], [1.0, 2.0])
    content = popularity_uplift([1.0, 1.0], [0.5, 1.5])
    rows = compare_modes({"style": style, "content": content})
    assert [row["mode"] for row in rows] == ["style", "content"]
    assert list(rows[0]) == ["mode", *ROW_KEYS]
    assert rows[0]["mean_uplift"] == pytest.approx(1.5)
    assert rows[1]["mean_uplift"] == pytest.approx(0.0)
    assert rows[1]["share_improved"] == pytest.approx(0.5)


def test_compare_modes_rejects_empty_or_foreign_results():
    with pytest.raises(ValueError, match="empty"):
        compare_modes({})
    with pytest.raises(ValueError, match="lacks"):
        compare_modes({"style": {"mean_uplift": 1.0}})
