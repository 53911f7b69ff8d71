"""The one error type the CLI turns into a single `error: …` line (no traceback, never a secret)."""


class DbctlError(Exception):
    """A problem the user can fix. The message names the problem and the fix; it never holds a secret."""


def one_line(e: BaseException) -> str:
    """An error as one line (libpq's messages span several)."""
    return " ".join(str(e).split()) or type(e).__name__
