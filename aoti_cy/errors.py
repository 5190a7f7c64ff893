"""Exceptions raised by aoti_cy.

Every error the C runtime reports becomes an :class:`AOTIError`; problems with
an artifact itself (a corrupt package, a library that will not load, a
missing required symbol) become :class:`PackageError`; a feature whose entry
point the loaded model does not export becomes :class:`MissingSymbolError`.
All of them pickle, so they survive a trip through multiprocessing.

Where torch's own loader raises ``RuntimeError``, code written against it
catches ``RuntimeError``: :class:`ModelNotFoundError` is one as well as a
:class:`PackageError`, and the torch-compatible API (``aoti_cy.torch_compat``)
raises the ``*RuntimeError`` forms below, each a subclass of both what aoti_cy
raises and ``RuntimeError``.
"""

__all__ = ["AOTIError", "ArgumentRuntimeError", "MissingSymbolError",
           "ModelNotFoundError", "PackageError", "PackageNotFoundRuntimeError",
           "PackageRuntimeError"]


class AOTIError(RuntimeError):
    """A C ABI call of the model returned a failure status.

    Parameters
    ----------
    function : str
        The C entry point that failed.
    detail : str
        The runtime's own message, or a note saying where it went.

    Attributes
    ----------
    function : str
        As given.
    detail : str
        As given.
    """

    def __init__(self, function, detail):
        super().__init__(f"{function} failed: {detail}")
        self.function = function
        self.detail = detail

    def __reduce__(self):
        return type(self), (self.function, self.detail)


class MissingSymbolError(NotImplementedError):
    """The loaded model library does not export the entry point a feature needs.

    Models built by older torch releases lack newer entry points; rebuilding
    the model with a newer torch adds them.

    Parameters
    ----------
    symbol : str
        The missing entry point.
    library : str
        The model library's path.

    Attributes
    ----------
    symbol : str
        As given.
    library : str
        As given.
    """

    def __init__(self, symbol, library):
        super().__init__(
            f"{symbol} is not exported by {library}: this model was built by a "
            f"torch release without it; recompile the model with a newer torch "
            f"to use this feature")
        self.symbol = symbol
        self.library = library

    def __reduce__(self):
        return type(self), (self.symbol, self.library)


class PackageError(ValueError):
    """The artifact cannot be used: a corrupt or unsafe package, a library that
    does not load, or one without the entry points every model exports."""


class ModelNotFoundError(PackageError, RuntimeError):
    """The package holds no model of the name asked for; the message lists
    those it holds. A ``RuntimeError`` too, as torch's loader raises there."""


def model_not_found(model_name, path, models):
    """The :class:`ModelNotFoundError` for ``model_name`` missing from the
    package at ``path`` that holds ``models``. Its message starts with torch's
    loader's, so code matching torch's error keeps working."""
    held = ", ".join(map(repr, sorted(models))) or "no models"
    return ModelNotFoundError(
        f"Failed to find a generated cpp file or so file for model '{model_name}' in the "
        f"zip archive. There is no model named {model_name!r} in {path}; it holds {held}")


class PackageRuntimeError(PackageError, RuntimeError):
    """A :class:`PackageError` raised through the torch-compatible API, where
    torch's loader raises ``RuntimeError``."""


class ArgumentRuntimeError(ValueError, RuntimeError):
    """A bad value (an input that does not fit the model, an unknown constant,
    ``num_runners`` out of range) raised through the torch-compatible API,
    where torch's loader raises ``RuntimeError``."""


class PackageNotFoundRuntimeError(FileNotFoundError, RuntimeError):
    """No file at the path given to the torch-compatible API (torch's loader
    raises ``RuntimeError`` there)."""
