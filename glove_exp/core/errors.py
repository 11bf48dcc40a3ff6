"""Errors in the user's input: the CLI prints them in one line and exits with ``exit_status``; bugs keep
their traceback."""


class GloveExpError(Exception):
    """A problem the user can fix; the message says what and, where obvious, how."""

    exit_status = 2


class ConfigError(GloveExpError):
    """An invalid config value."""


class DataError(GloveExpError):
    """A dataset that cannot be read or does not match its config."""


class EmbeddingsError(GloveExpError):
    """A vector file or download that cannot be used."""


class TrainingError(GloveExpError):
    """Training diverged (NaN/inf loss)."""


class TrackingError(GloveExpError):
    """A tracking store or experiment that cannot be used."""


def first_line(err: BaseException) -> str:
    """An error's first line, or its type's name when it says nothing."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
