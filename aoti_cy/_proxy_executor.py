"""Placeholder until the proxy executor lands: no package gets one."""


def executor_for(library_path, device):
    """The proxy executor for the model at ``library_path`` (its fallback
    ops described by the ``.json`` beside it), or None when it needs none."""
    return None
