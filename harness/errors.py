"""One error family for everything a user can get wrong; the CLI reports it as one line and a hint."""


class BenchError(Exception):
    """A problem the user can fix. `hint` says how; `exit_code` is what `bench` exits with."""

    exit_code = 2

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __reduce__(self):
        # Crosses process boundaries whole (message and hint), whatever the subclass's constructor takes.
        return _rebuild, (type(self), self.message, self.hint)


def _rebuild(cls: type, message: str, hint: str) -> "BenchError":
    error = cls.__new__(cls)
    BenchError.__init__(error, message, hint)
    return error


class ConfigError(BenchError):
    """A suite, task, profile or command-line value is invalid."""


class UnknownNameError(BenchError):
    """A model alias, backend, scenario, suite or profile name that is not registered."""

    def __init__(self, kind: str, name: str, known: list[str], hint: str = ""):
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(sorted(known))}", hint)


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of what it says."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


class UnavailableError(BenchError):
    """A model, data file or measurement cannot be had here (offline, missing package, bad checksum, not a model
    folder, a calibration on a busy machine)."""
