"""One error base class; each error also subclasses the matching builtin.

Callers can catch ``OrcaError`` for anything sparkorca raises, or the builtin
(``ValueError``, ``RuntimeError``, ``TimeoutError``) they already handle.
"""


class OrcaError(Exception):
    """Base class of every error sparkorca raises."""


class InvalidArgumentError(OrcaError, ValueError):
    """An argument or flag has a value sparkorca does not accept.

    The message names the parameter, the bad value and what is accepted.
    """

    errors: "list[InvalidArgumentError]"  # set by all_of on a combined error

    def __init__(self, name, value, accepted, hint=None):
        self.name = name
        self.value = value
        self.accepted = accepted
        msg = f"{name}={value!r} is not accepted; expected {accepted}"
        if hint:
            msg += f". {hint}"
        super().__init__(msg)

    @classmethod
    def all_of(cls, errors) -> "InvalidArgumentError":
        """One error that names every bad argument (the first one's attributes),
        so a user fixes them all at once, as argparse reports them."""
        errors = list(errors)
        if len(errors) == 1:
            return errors[0]
        first = errors[0]
        combined = cls(first.name, first.value, first.accepted)
        combined.args = ("; and ".join(str(e) for e in errors),)
        combined.errors = errors
        return combined


class UnknownArgumentError(OrcaError, TypeError):
    """Keyword arguments that init_orca_context does not know."""


class UnknownFlagError(OrcaError, AttributeError):
    """An OrcaContext flag that does not exist was set (a misspelling, usually)."""


class OrcaRuntimeError(OrcaError, RuntimeError):
    """Something failed while starting, running or stopping a context."""


class JavaError(OrcaRuntimeError):
    """Java is missing or too old for the installed Spark."""


class NoContextError(OrcaRuntimeError):
    """An operation needs a context and none is running."""


class StartupTimeoutError(OrcaError, TimeoutError):
    """A process or service did not become ready before its deadline."""


class MissingPathError(OrcaError, FileNotFoundError):
    """A path given to read data does not exist."""
