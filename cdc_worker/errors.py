"""One error hierarchy for the worker: catch ``CdcError`` to catch everything we raise."""


class CdcError(Exception):
    """Raised for any error this project raises on purpose."""


class ConfigurationError(CdcError):
    """Raised when settings are invalid; the message names the variable to fix."""


class ServerUnreachable(CdcError):
    """Raised when MySQL or Redis refuses or times out a connection: worth waiting for."""


class SourceError(CdcError):
    """Raised when the MySQL/MariaDB source cannot be used as it is."""


class ServerSettingsError(SourceError):
    """Raised when the server's binlog settings make correct streaming impossible."""


class MissingDatabaseError(SourceError):
    """Raised when the database named in a MySQL URL does not exist on the server."""


class MissingGrantsError(SourceError):
    """Raised when the configured MySQL user lacks a privilege the worker needs."""


class StreamInterrupted(SourceError):
    """Raised when the replication connection drops; the loop resumes from the checkpoint."""


class CheckpointLost(SourceError):
    """Raised when the checkpoint's binlog is gone from the server (error 1236)."""


class UnreadableEvent(SourceError):
    """Raised when the binlog holds an event that may change rows and the worker cannot
    read it: the worker stops applying there rather than skip it."""


class StoreError(CdcError):
    """Raised when the Redis store cannot be used."""


class LocalServerError(CdcError):
    """Raised when a private MariaDB or Redis for tests or the demo cannot be started."""
