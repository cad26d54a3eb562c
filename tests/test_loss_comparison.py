"""benchmarks/loss_comparison.py's verdicts: sample std over seeds, the gain over the student alone, and "clears the
spread" (mean - std of the method above mean + std of the student alone)."""
import importlib.util
import os

import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "loss_comparison.py")


@pytest.fixture(scope="module")
def comparison():
    spec = importlib.util.spec_from_file_location("loss_comparison", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_states_the_gain_and_whether_it_clears_both_spreads(comparison):
    alone = [64.0, 65.0, 66.0]  # mean 65, sample std 1
    rows = [("student alone", "—", alone, None), ("clear", "r", [67.5, 68.0, 68.5], 71.25),  # 68 - 0.5 > 65 + 1
            ("overlapping", "r", [65.0, 67.0, 69.0], 71.25), ("worse", "r", [60.0, 61.0, 62.0], None)]
    text, record = comparison.table(rows, alone)
    by_method = {r["method"]: r for r in record}
    assert by_method["student alone"]["std"] == pytest.approx(1.0) and by_method["student alone"]["delta"] is None
    assert (by_method["clear"]["delta"], by_method["clear"]["clears_spread"]) == (pytest.approx(3.0), True)
    assert (by_method["overlapping"]["delta"], by_method["overlapping"]["clears_spread"]) == (pytest.approx(2.0), False)
    assert by_method["worse"]["clears_spread"] is False
    assert "| clear | r | 71.25 | 3 | 68.00 ± 0.50 | 67.50 68.00 68.50 | +3.00 | yes |" in text
    assert "| overlapping | r | 71.25 | 3 | 67.00 ± 2.00 | 65.00 67.00 69.00 | +2.00 | no |" in text
    assert "| worse | r | — | 3 |" in text and by_method["clear"]["teacher_top1"] == 71.25


def test_recipe_text_shows_what_the_run_used(comparison):
    assert comparison.recipe_text({"alpha": 9.0, "student_weight": 0.1, "temperature": 2.0}) == \
        "distill 9, CE 0.1, T 2"
