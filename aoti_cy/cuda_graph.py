"""Deprecated alias of :mod:`aoti_cy.cuda_graphs`; import that module instead.

Importing ``aoti_cy.cuda_graph`` warns (``DeprecationWarning``). Every name
it offers is the object of the same name in ``aoti_cy.cuda_graphs``, with
that module's defaults: ``aoti_cy.cuda_graph.capture`` *is*
``aoti_cy.cuda_graphs.capture``.
"""

import warnings

from aoti_cy import cuda_graphs as _cuda_graphs

warnings.warn("aoti_cy.cuda_graph is deprecated; use aoti_cy.cuda_graphs (same names, "
              "same defaults)", DeprecationWarning, stacklevel=2)

__all__ = list(_cuda_graphs.__all__)


def __getattr__(name):
    # Every public name, looked up when asked for, so the alias never holds
    # an object that cuda_graphs no longer has.
    if name in _cuda_graphs.__all__:
        return getattr(_cuda_graphs, name)
    raise AttributeError(f"module 'aoti_cy.cuda_graph' has no attribute {name!r} "
                         f"(it is a deprecated alias of aoti_cy.cuda_graphs)")


def __dir__():
    return sorted(__all__)
