"""The project's exception hierarchy; the API layer alone turns these into HTTP errors."""

from __future__ import annotations


class RohdeError(Exception):
    """Base class of every error RoHDE raises on purpose."""


class ConfigError(RohdeError, ValueError):
    """A parameter or configuration value is invalid."""


class LayoutError(ConfigError):
    """An electrode layout is inconsistent or does not fit the data."""


class RecordingFormatError(RohdeError):
    """A recording file is missing, unreadable or inconsistent."""


class ModelPackageError(RohdeError):
    """A model package is missing a file, has inconsistent metadata or a wrong checksum."""


class ModelMetadataError(ModelPackageError):
    """A package's metadata.json is unreadable, not UTF-8, not JSON, too large or deep, or inconsistent."""


class StreamNotFoundError(RohdeError):
    """No LSL stream matched the requested name, type or source_id."""


class StreamMismatchError(RohdeError):
    """An LSL stream does not fit the active model (channel count, rate or format)."""
