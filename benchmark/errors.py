"""One exception type for bad input: the CLI prints its message (cause and fix) and exits non-zero."""


class BenchmarkError(Exception):
    """A user-facing error. The message names the cause and how to fix it."""


def brief(error: BaseException, limit: int = 300) -> str:
    """A library's error message on one line (torch's state-dict errors span several), cut at `limit` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
