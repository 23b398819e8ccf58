"""User-facing errors: anything the user can fix (bad config, bad data, bad run directory).

The CLI catches `CycleSegError` and prints its message as one line with a non-zero exit, never a
traceback. Messages name the file or key at fault and say how to fix it.
"""


class CycleSegError(Exception):
    """Base class of every error whose message is meant for the user."""


class ConfigError(CycleSegError):
    """An invalid configuration key or value; `key` names it ("optim.lr") when there is one, `reason` is the
    message without the name of the file it came from."""

    def __init__(self, message: str, key: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.reason = reason or message


class DataError(CycleSegError):
    """A missing, mismatched or corrupt dataset file or folder."""


class RunError(CycleSegError):
    """A run directory or checkpoint that cannot be used."""


class UnsafeCheckpoint(RunError):
    """A checkpoint that the safe load refuses: pickled objects beyond tensors and plain data (cycleseg 0.1.0's
    NumPy RNG state, or anything planted). Never read as "no checkpoint": every reader reports it."""


class Interrupted(RunError):
    """SIGINT or SIGTERM stopped training at a safe point, after writing a checkpoint."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


def user_message(error: BaseException) -> str:
    """The error's message on one line. An error raised in a DataLoader worker arrives wrapped in the worker's
    traceback ("Caught DataError in DataLoader worker process 0. Original Traceback ..."): take its last line,
    the original message."""
    text = str(error).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        prefix, sep, message = last.partition(": ")
        text = message if sep and "Error" in prefix else last
    return " ".join(text.splitlines()) or type(error).__name__
