"""The one exception type that user mistakes turn into.

The CLI prints its message on one line and exits with status 2. Anything else that escapes is a
bug in `unlearn`, not in the user's input.
"""

from __future__ import annotations


class UnlearnError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    def __init__(self, message: str):
        text = str(message)
        # One line, whatever the user's text held: \r, \u2028 and the like count as line breaks too.
        # (A sentinel is appended so that a trailing break counts too.)
        super().__init__(" ".join(text.split()) if len((text + ".").splitlines()) > 1 else text)


def where(source: str | None, line: int | None = None, field: str | None = None) -> str:
    """Format the location prefix of an error: 'file line 12: field'."""
    parts = []
    if source:
        parts.append(str(source))
    if line is not None:
        parts.append(f"line {line}")
    loc = " ".join(parts)
    if field:
        loc = f"{loc}: {field}" if loc else field
    return loc


def one_line(e: BaseException) -> str:
    """An exception as one line: its message (or type), whitespace collapsed."""
    text = " ".join(str(e).split())
    return text or type(e).__name__


def text_problem(value: str) -> str | None:
    """What makes a string unusable as a path, a model name or training text, or None: a NUL
    character, or a lone surrogate (the escape "\\ud800" in JSON or YAML decodes to one; it cannot
    be written to a file or given to a tokenizer)."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"contains an invalid character (lone surrogate U+{ord(value[e.start]):04X})"
    return None


class RunInterrupted(UnlearnError):
    """The run stopped on SIGINT/SIGTERM after finishing a step and writing a checkpoint.

    The message says how to resume. `signum` is the signal; `checkpoint` the folder written (or
    None where checkpoints are not possible).
    """

    def __init__(self, message: str, signum: int, checkpoint: object = None):
        super().__init__(message)
        self.signum = signum
        self.checkpoint = checkpoint
