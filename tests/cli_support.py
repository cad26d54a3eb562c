"""Shared by the report, sweep and reproduce tests: ``kd-plugin`` in-process, and its one-line error contract."""
from kd_plugin.cli.kd_plugin import main as kd_plugin


def exit_code(argv):
    """kd-plugin's exit code, whether the command returns it or argparse exits."""
    try:
        return kd_plugin(argv)
    except SystemExit as exit_:
        return exit_.code


def assert_one_line_error(argv, message, capsys):
    code = exit_code(argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
