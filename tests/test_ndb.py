"""Tests of NDB / JSD (pop_tf.metrics.ndb, docs/metrics.md; Richardson & Weiss 2018)."""

import math

import numpy as np
import pytest

from pop_tf.metrics import ndb as ndblib

NUM_MODES = 20
DIMS = 10
NUM_SAMPLES = 2000


@pytest.fixture(scope="module")
def centres():
    # 20 modes spread with std 5 in 10-D, sampled with std 0.3 below: far apart, so k-means with
    # 20 bins puts one bin on each mode.
    return np.random.default_rng(123).normal(scale=5.0, size=(NUM_MODES, DIMS))


def _mixture(centres, seed, n=NUM_SAMPLES, drop=None):
    rng = np.random.default_rng(seed)
    modes = [m for m in range(len(centres)) if m != drop]
    labels = rng.choice(modes, size=n)
    return centres[labels] + rng.normal(scale=0.3, size=(n, centres.shape[1]))


# --- the statistics, by hand -------------------------------------------------------------------


def test_z_test_matches_hand_computation():
    z, p_values = ndblib.two_proportion_z_test([0.5, 0.2, 0.0], 100, [0.3, 0.2, 0.0], 100)
    # Bin 0: pooled p = 0.4, se = sqrt(0.4 * 0.6 * (1/100 + 1/100)).
    expected_z = 0.2 / math.sqrt(0.4 * 0.6 * 0.02)
    assert z[0] == pytest.approx(expected_z)
    assert p_values[0] == pytest.approx(math.erfc(expected_z / math.sqrt(2.0)))
    assert p_values[0] < 0.05
    # Equal proportions: no difference; empty in both: z = 0 and p = 1 rather than 0/0.
    assert z[1] == 0.0 and p_values[1] == pytest.approx(1.0)
    assert z[2] == 0.0 and p_values[2] == 1.0


def test_z_test_unequal_sizes_and_sign():
    z, _ = ndblib.two_proportion_z_test([0.1], 400, [0.25], 100)
    pooled = (0.1 * 400 + 0.25 * 100) / 500
    se = math.sqrt(pooled * (1 - pooled) * (1 / 400 + 1 / 100))
    assert z[0] == pytest.approx((0.1 - 0.25) / se)
    assert z[0] < 0  # over-represented in the second sample


def test_jsd_by_hand():
    assert ndblib.jensen_shannon_divergence([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    assert ndblib.jensen_shannon_divergence([1, 0], [0, 1]) == pytest.approx(math.log(2.0))
    # p = (½, ½), q = (1, 0), m = (¾, ¼): KL(p‖m) = ½ ln(4/3), KL(q‖m) = ln(4/3), so
    # JSD = ¾ ln(4/3). Counts are normalised first.
    assert ndblib.jensen_shannon_divergence([2, 2], [3, 0]) == pytest.approx(0.75 * math.log(4 / 3))
    with pytest.raises(ValueError, match="same length"):
        ndblib.jensen_shannon_divergence([0.5, 0.5], [1.0])
    with pytest.raises(ValueError, match="non-negative"):
        ndblib.jensen_shannon_divergence([0.5, -0.5], [0.5, 0.5])


# --- on mixtures of Gaussians ------------------------------------------------------------------


def test_same_distribution_gives_few_bins_and_small_jsd(centres):
    result = ndblib.ndb_jsd(_mixture(centres, 1), _mixture(centres, 2), num_bins=NUM_MODES)
    # Expected false positives: alpha * K = 1.
    assert result["ndb"] <= 4
    assert result["ndb_ratio"] == result["ndb"] / NUM_MODES
    assert result["jsd"] < 0.01
    assert len(result["train_proportions"]) == len(result["generated_proportions"]) == NUM_MODES
    assert sum(result["train_proportions"]) == pytest.approx(1.0)
    # Bins are ordered by training proportion, largest first.
    assert result["train_proportions"] == sorted(result["train_proportions"], reverse=True)
    assert (result["num_bins"], result["alpha"], result["whiten"], result["seed"]) == (
        NUM_MODES, 0.05, False, 0)


def test_dropped_mode_is_flagged_and_jsd_grows(centres):
    train = _mixture(centres, 1)
    bins = ndblib.NDB(train, num_bins=NUM_MODES)
    same = bins.evaluate(_mixture(centres, 2))
    dropped = bins.evaluate(_mixture(centres, 2, drop=0))
    missing_bin = int(bins.assign(centres[:1])[0])
    assert missing_bin in dropped["significant_bins"]
    assert dropped["generated_proportions"][missing_bin] == 0.0
    assert dropped["z_scores"][missing_bin] > 0  # under-represented in the generated set
    assert dropped["ndb"] <= 5
    assert dropped["jsd"] > 0.01 and dropped["jsd"] > 5 * same["jsd"]


def test_ndb_jsd_equals_ndb_class_and_is_reproducible(centres):
    train, generated = _mixture(centres, 1), _mixture(centres, 3, drop=4)
    first = ndblib.ndb_jsd(train, generated, num_bins=NUM_MODES, seed=7)
    second = ndblib.ndb_jsd(train, generated, num_bins=NUM_MODES, seed=7)
    assert first == second
    assert ndblib.NDB(train, num_bins=NUM_MODES, seed=7).evaluate(generated) == first


def test_dimension_subset_is_seeded():
    rng = np.random.default_rng(0)
    # Above 1000 values per sample (raw pixels): bins live on a random d // 6 subset.
    train = rng.normal(size=(60, 1200)).astype(np.float32)
    generated = rng.normal(size=(40, 1200)).astype(np.float32)
    a = ndblib.NDB(train, num_bins=3, seed=5, n_init=2)
    b = ndblib.NDB(train, num_bins=3, seed=5, n_init=2)
    c = ndblib.NDB(train, num_bins=3, seed=6, n_init=2)
    assert a.dims.size == 200
    np.testing.assert_array_equal(a.dims, b.dims)
    assert not np.array_equal(a.dims, c.dims)
    assert a.evaluate(generated) == b.evaluate(generated)
    small = ndblib.ndb_jsd(train[:, :20], generated[:, :20], num_bins=3, max_dims=5)
    assert small["num_dims_used"] == 5 and small["max_dims"] == 5


def test_whitening_standardised_data_changes_little(centres):
    train = _mixture(centres, 1)
    mean, std = train.mean(axis=0), train.std(axis=0)
    train = (train - mean) / std
    same = (_mixture(centres, 2) - mean) / std
    dropped = (_mixture(centres, 2, drop=0) - mean) / std
    for whiten in (False, True):
        bins = ndblib.NDB(train, num_bins=NUM_MODES, whiten=whiten)
        assert bins.evaluate(same)["ndb"] <= 4
        result = bins.evaluate(dropped)
        assert 1 <= result["ndb"] <= 5
        missing_bin = int(bins.assign((centres[:1] - mean) / std)[0])
        assert missing_bin in result["significant_bins"]


# --- errors ------------------------------------------------------------------------------------


def test_errors_are_clear():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(30, 4))
    with pytest.raises(ValueError, match=r"30 samples, fewer than num_bins=50"):
        ndblib.ndb_jsd(train, train, num_bins=50)
    with pytest.raises(ValueError, match=r"generated_samples have 5 values each but the training "
                                         r"samples had 4"):
        ndblib.ndb_jsd(train, rng.normal(size=(10, 5)), num_bins=3)
    with pytest.raises(ValueError, match=r"generated_samples is empty"):
        ndblib.ndb_jsd(train, np.zeros((0, 4)), num_bins=3)
    with pytest.raises(ValueError, match=r"train_samples is empty"):
        ndblib.ndb_jsd(np.zeros((0, 4)), train, num_bins=3)
    with pytest.raises(ValueError, match=r"num_bins must be an integer"):
        ndblib.NDB(train, num_bins=1)
    with pytest.raises(ValueError, match=r"alpha must lie strictly between 0 and 1"):
        ndblib.ndb_jsd(train, train, num_bins=3, alpha=5)
    with pytest.raises(ValueError, match=r"only finite values"):
        ndblib.ndb_jsd(train, np.full((3, 4), np.nan), num_bins=3)
