"""One exception type for bad input: the CLI prints its message (cause and fix) and exits non-zero."""


class BenchmarkError(Exception):
    """A user-facing error. The message names the cause and how to fix it."""
