"""The statistics helpers of bench/pumpchain.py (not its timings)."""

import importlib
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def pc():
    pytest.importorskip("psutil")
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("pumpchain")
    finally:
        sys.path.remove(str(BENCH))


def test_percentile_nearest_rank(pc):
    values = list(range(1, 101))          # 1..100
    assert pc.percentile(values, 50) == 51
    assert pc.percentile(values, 99) == 99
    assert pc.percentile(values, 100) == 100
    assert pc.percentile([5.0], 99) == 5.0
    assert math.isnan(pc.percentile([], 99))


def test_pubtime_epoch_is_utc_with_fraction(pc):
    assert pc.pubtime_epoch("19700101000001") == 1.0
    assert pc.pubtime_epoch("20261205191112.5") == pytest.approx(1796497872.5)


def test_per_thousand_subtracts_idle_and_skips_dead(pc):
    before = {"sarra": 10.0, "broker": 100.0, "gone": 1.0}
    after = {"sarra": 12.0, "broker": 106.0, "new": 3.0}
    got = pc.per_thousand(before, after, 2000, idle={"broker": 1.0}, seconds=4.0)
    assert got == {"sarra": pytest.approx(1.0), "broker": pytest.approx(1.0)}
    # an idle rate above what was used never gives a negative cost
    assert pc.per_thousand({"b": 1.0}, {"b": 1.5}, 1000, {"b": 1.0}, 5.0) == {"b": 0.0}
    assert pc.per_thousand({"b": 1.0}, {"b": 2.0}, 0) == {}


def test_medians_of_rows_with_missing_keys(pc):
    rows = [{"a": 1.0, "b": 10.0}, {"a": 3.0}, {"a": 2.0, "b": 30.0}]
    assert pc.medians(rows) == {"a": 2.0, "b": 20.0}
    assert pc.medians([]) == {}


def test_stage_of_groups_the_report_shovels(pc):
    assert pc.stage_of("rr_xreport2alice") == "shovels"
    assert pc.stage_of("sarra") == "sarra"
