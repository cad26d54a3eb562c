"""User-facing errors and the one-line-on-stderr contract of every entry point."""


class KDPluginError(Exception):
    """A problem with the user's input (file, flag, data). Printed as one line, never a traceback."""

    exit_code = 2
    label = "error"


class FieldErrors(KDPluginError):
    """Several bad settings at once (a run spec's fields): each is printed on a line of its own."""

    def __init__(self, lines):
        super().__init__("\n".join(lines))
        self.lines = list(lines)


class TrainingInterrupted(KDPluginError):
    """Raised after a signal once a resumable checkpoint is safely on disk."""

    label = "interrupted"

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


class NonFiniteLoss(KDPluginError):
    exit_code = 3


def one_line(text):
    return " ".join(str(text).split())
