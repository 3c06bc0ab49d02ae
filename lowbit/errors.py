"""Errors lowbit reports to users as one clear line (the CLI prints them without a traceback)."""


class LowbitError(Exception):
    """A user-facing error: bad input, a missing file, an invalid setting.

    The message names the file or key at fault; the CLI prints `error: <message>`
    and exits with status 2.
    """


class ConfigError(LowbitError, ValueError):
    """An invalid configuration value or key."""


class DataError(LowbitError):
    """A data source or prepared dataset that cannot be read."""


class CheckpointError(LowbitError):
    """A checkpoint that is missing, corrupt, or belongs to another model."""


class TrainingError(LowbitError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""
