"""Checking a state dict against a loaded model without applying it: the
first phase of a rollout, so that every replica can refuse before any
changes. The checks are ``ModelContainer.load_weights``'s own
(``ConstantTable.match_state_dict``); only applying is left out."""

from aoti_cy._constants import ConstantTable, unset_constants

__all__ = ["ActiveConstants"]


class ActiveConstants:
    """Which constants of ``container`` have a value, and their shapes: read
    once (a copy of every weight, dropped at once), so later checks cost no
    copy. Rollouts keep the shapes; read it again after one only where some
    constants had no value (``incomplete``)."""

    def __init__(self, container):
        self._container = container
        fqn_to_name = container.constant_fqns
        try:
            current = container.extract_constants_map()
        except NotImplementedError:   # no extract entry point: shapes unknown
            current = None
        self.present = None if current is None else set(current)
        # A package without weights: constants get values at the first rollout.
        self.incomplete = current is not None and bool(unset_constants(
            container.constants, {fqn_to_name[fqn] for fqn in current}))
        self.shapes = {} if current is None else {
            fqn_to_name[fqn]: tuple(t.shape) for fqn, t in current.items()}

    def problems(self, state_dict, strict=True):
        """What ``load_weights(state_dict, strict=strict)`` would refuse, as a
        list of messages (empty: it would load)."""
        table = ConstantTable(self._container.constants, self.shapes,
                              self._container.device)
        try:
            values, problems = table.match_state_dict(state_dict)
        except (TypeError, ValueError) as e:
            return [str(e)]
        found = list(problems) if strict else []
        if self.present is not None:
            unset = [fqn for fqn in table.unset(values) if fqn not in self.present]
            if unset:
                found.append(f"constants {unset} have no value yet (the package "
                             f"holds no weights for them): give them too")
        return found
