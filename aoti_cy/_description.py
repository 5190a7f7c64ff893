"""What a model library says of itself, read once per library.

The ABI describes a model (input and output names, call spec, constants)
only through a container. Every container and model made from one `.so`
shares that description: the first container of a library reads it and
leaves it here, and whoever needs it before any container exists (a
single-instance Model, a container over external constants) asks
:func:`description_for`, which makes one container for the purpose, once
per library.
"""

import weakref

from aoti_cy._call import CallSpec, OUT_GENERAL

__all__ = ["ModelDescription", "description_for", "remember"]

# ModelLibrary -> ModelDescription; a library is described while it is loaded.
_by_library = weakref.WeakKeyDictionary()


class ModelDescription:
    """A model library's names, call spec and constants.

    ``shapes`` (internal name -> shape of each constant) is None until a
    container of the library has a value for every constant (shapes are
    fixed at compile time, values are not); ``embedded`` (internal names of
    the constants the `.so` itself gives values) is None until a container
    created the usual way says.
    """

    __slots__ = ("input_names", "output_names", "call_spec", "call", "flat_call",
                 "out_kind", "constants", "shapes", "embedded")

    def __init__(self, input_names, output_names, call_spec, constants):
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)
        self.call_spec = tuple(call_spec)
        self.call = CallSpec(call_spec[0], call_spec[1], len(self.input_names))
        self.flat_call = self.call.error is None and self.call.flat_inputs
        self.out_kind = getattr(self.call, "out_kind", OUT_GENERAL)
        self.constants = tuple(constants)
        self.shapes = None
        self.embedded = None

    def embedded_constants(self):
        """Internal names of the constants a new container or model of the
        library has values for (those the `.so` holds); every constant's
        where no container could say."""
        if self.embedded is None:
            return [c.name for c in self.constants]
        return self.embedded

    @property
    def num_inputs(self):
        return len(self.input_names)

    @property
    def num_outputs(self):
        return len(self.output_names)


def remember(library, description):
    """Keep the description a container read (the first one wins)."""
    return _by_library.setdefault(library, description)


def cached(library):
    """The library's description, or None when no container has read it."""
    return _by_library.get(library)


def description_for(library, device, cubin_dir=None):
    """The description of ``library``, making a container to read it only
    when none of that library has yet (a transient copy of any weights the
    `.so` holds)."""
    description = _by_library.get(library)
    if description is None:
        from aoti_cy.interface import ModelContainer
        # Creating it reads the description, and the constants' shapes where
        # the .so gives every constant a value.
        ModelContainer(library.path, device=device, cubin_dir=cubin_dir, check_inputs=False,
                       allow_executable_stack=library.executable_stack).close()
        description = _by_library[library]
    return description
