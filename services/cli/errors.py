"""Every error the CLI reports, and the exit code each one ends the process with.

    CliError                 exit 2   a readable one-line message, never a traceback
    └── UsageError                    a bad argument, file or JSON given on the command line
    discovery_client.EngineError
                             exit 2   the engine refused or could not be reached: its
                                      `describe()` (message, fields at fault, reason)

An execution that ends failed or cancelled is not an error of the CLI: `watch` reports it
and exits 1 (see __main__.py).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_EXECUTION_FAILED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    exit_code = EXIT_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def describe(self) -> str:
        return self.message


class UsageError(CliError):
    pass


class Interrupted(CliError):
    """Ctrl-C while following: the execution goes on; say how to pick it up again."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, execution_id: str, last_seq: int | None) -> None:
        resume = f" --after-seq {last_seq}" if last_seq is not None else ""
        super().__init__(
            f"stopped watching {execution_id}; it goes on. "
            f"Follow it again with: discovery watch {execution_id}{resume}"
        )
