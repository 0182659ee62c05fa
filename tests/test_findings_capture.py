"""The findings rules of notebooks 02 (capture, sinks) and 09 (explorer masking): verdicts follow the docstrings."""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers import findings
from helpers.extract import EagerCheck
from helpers.results import Results


def sinks(first: list[float], ratio: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"layer": range(len(first)), "first_token": first, "weight_vs_uniform": ratio})


def test_capture_findings_rules():
    ok = EagerCheck(2e-6, 1e-5, 0.0, True, 4, 1080, "float32")
    bad = EagerCheck(3e-3, 1e-5, 0.0, False, 4, 1080, "float32")
    early = sinks([0.0, 0.5, 0.6, 0.7], [1.0, 3.0, 0.8, 0.5])  # median sink 0.55; late layers 0.65 of uniform
    late = sinks([0.0, 0.1, 0.1, 0.3], [1.0, 1.0, 1.0, 2.0])   # median sink 0.1; late layers 1.5 x uniform
    rows = findings.capture_findings(ok, {"a": early, "b": early})
    assert [r.agrees for r in rows] == [True, True, True]
    assert "over 2 task sets" in rows[1].measured and "0.550" in rows[1].measured
    rows = findings.capture_findings(bad, {"a": late})
    assert [r.agrees for r in rows] == [False, False, False]
    assert [r.agrees for r in findings.capture_findings(ok, {"a": early, "b": late})][1:] == [None, None]
    assert findings.capture_findings(EagerCheck(0.0, 1e-5, 0.0, False, 0, 0, "float32"), {})[0].agrees is None
    assert list(findings.table(rows).columns) == ["claim", "paper", "measured", "verdict"]


def test_masking_findings_rules():
    right, wrong = [True] * 40, [False] * 40
    rows = findings.masking_findings(right, wrong, right, k=4, top_region=[True] * 30)
    assert [r.agrees for r in rows] == [True, True]
    rows = findings.masking_findings(right, right, wrong, k=4, top_region=[False] * 30)
    assert [r.agrees for r in rows] == [False, False]
    rows = findings.masking_findings(right[:4], [True, False, True, False], [True, True, False, True], k=2,
                                     top_region=[True, False])
    assert [r.agrees for r in rows] == [None, None] and "(n=4)" in rows[0].measured


def test_top_heads_in_box():
    share = np.zeros((3, 2, 2), np.float32)
    share[0, 1, 0], share[1, 1, 0] = 0.9, 0.05
    share[2] = np.nan  # no box
    table = pd.DataFrame({"sample_id": list("abc"), "n_region_tokens": [10, 10, 0], "n_image_tokens": [100] * 3})
    res = Results(table, {"region_share": share})
    np.testing.assert_array_equal(findings.top_heads_in_box(res, [(1, 0)]), [True, False])
    np.testing.assert_array_equal(findings.top_heads_in_box(res, [(1, 0), (0, 0)]), [True, False])  # 0.45, 0.025
