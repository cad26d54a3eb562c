"""Issue 8, clause 6: the bad-input matrix (tests/bad_input_cases.py) across compress_classifier,
main_KD_CIFAR10 and kd-plugin: one line on stderr naming the problem, exit 2, no traceback, nothing run
and nothing written."""
import os

import bad_input_cases as matrix
import pytest

BY_NAME = {case.name: case for case in matrix.CASES}
# main_KD_CIFAR10 (issue 5) reports a wrong positional value with its usage text after the error line.


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return matrix.build_inputs(str(tmp_path_factory.mktemp("bad_inputs")))


def files_under(root):
    return {os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names}


def run_and_check(run, case, inputs):
    before = files_under(inputs["root"])
    code, lines = run(case, inputs)
    assert files_under(inputs["root"]) == before, "a refused run left files behind"
    assert not os.path.exists(inputs["marker"]), "a malicious input ran code"
    assert code == case.code
    assert not any("Traceback" in line for line in lines)
    assert lines and matrix.expected_line(case, inputs).match(lines[0]), lines[:1]
    assert len(lines) == 1, lines


def test_the_matrix_covers_every_entry_point_and_kind():
    assert len(matrix.CASES) >= 25 and len(BY_NAME) == len(matrix.CASES)
    assert {case.program for case in matrix.CASES} == {"compress_classifier", "kd-plugin", "main_KD_CIFAR10"}


@pytest.mark.parametrize("name", list(BY_NAME))
def test_bad_input_in_process(name, inputs):
    run_and_check(matrix.run_in_process, BY_NAME[name], inputs)


@pytest.mark.parametrize("name", matrix.SUBPROCESS_CASES)
def test_bad_input_through_the_console_script(name, inputs):
    run_and_check(matrix.run_as_subprocess, BY_NAME[name], inputs)
