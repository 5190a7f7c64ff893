"""Checking constant values (weights, buffers) before they reach the runtime.

The runtime copies each given tensor's whole storage into the constant's slot
without a bounds check, and trusts names, dtypes and devices. So every update
entry point (``update_constant_buffer``, ``load_weights``,
``Model.update_constants_map``) goes through one :class:`ConstantTable`, which
names every bad value in one message before anything changes.

Sizes: ``GetConstantDataSize`` reports a constant's slot, i.e. its bytes
rounded up to the runtime's 64-byte alignment (a ``Linear(48, 40)`` bias has
160 bytes in a 192-byte slot). A value fits when its shape is the constant's
(known from the active buffer), or, where the shape is unknown (a container
whose weights were never set), when its bytes round up to the slot.
"""

from collections import namedtuple

import numpy
import torch

__all__ = ["ALIGNMENT", "BUFFER", "ConstantInfo", "ConstantTable", "ConstantsState",
           "PARAMETER", "TENSOR_CONSTANT", "unset_constants", "weights_to_load"]

ConstantInfo = namedtuple(
    "ConstantInfo", "name original_fqn dtype from_folded type data_size")
ConstantInfo.__module__ = "aoti_cy"
ConstantInfo.__doc__ = """One constant (weight, buffer, folded value) of a model.

``name`` is the runtime's internal name, ``original_fqn`` the name in the
exported module's state dict; ``type`` and ``data_size`` (bytes) are None
where the model does not export them."""

# AOTI_CONST_ALIGNMENT in torch/csrc/inductor/aoti_runtime/model_base.h
ALIGNMENT = 64

# torch/csrc/inductor/aoti_runtime/constant_type.h
UNKNOWN, PARAMETER, BUFFER, TENSOR_CONSTANT, FOLDED_CONSTANT = range(5)

_COMPILED_IN = (
    "not constants of the compiled model. If one names a parameter or buffer "
    "of the exported module, either the exported call never reads it (a mask "
    "token used only in pre-training, such as Wav2Vec2's masked_spec_embed or "
    "DINOv2's mask_token: nothing to update, strict=False loads the rest), or "
    "inductor compiled it into the kernels (small tensors are inlined, values "
    "computed only from weights are folded at compile time, and with "
    "freezing=True every weight is) and it cannot be updated; compile with "
    "torch._inductor.config.always_keep_tensor_constants=True (and without "
    "freezing) to keep such tensors updatable (a parameter used only through "
    "a function of itself, such as CLIP's logit_scale.exp(), is folded into "
    "a number even then)")


def _aligned(nbytes):
    return -(-nbytes // ALIGNMENT) * ALIGNMENT


def _as_tensor(key, value):
    if isinstance(value, numpy.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"constant {key!r} must be a torch.Tensor, got "
                        f"{type(value).__name__}")
    return value


def _padded(tensor, nbytes):
    """``tensor``'s values at the start of a zeroed buffer of ``nbytes``."""
    buffer = torch.zeros(nbytes // tensor.element_size(), dtype=tensor.dtype,
                         device=tensor.device)
    buffer[:tensor.numel()] = tensor.reshape(-1)
    return buffer[:tensor.numel()].view(tensor.shape)


def _same_value(a, b):
    """Whether two tensors hold the same value (the same memory counts)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.device == b.device and a.data_ptr() == b.data_ptr() and a.stride() == b.stride():
        return True
    return bool(torch.equal(a, b.to(a.device)))


def unset_constants(constants, names):
    """FQNs of the ``constants`` (ConstantInfo) that are not folded and whose
    internal name is not in ``names``: the ones a model still needs."""
    return [c.original_fqn for c in constants if not c.from_folded and c.name not in names]


class ConstantsState:
    """What a container or model knows of its constants' values.

    ``constants`` (ConstantInfo per constant) and ``shapes`` come from the
    library's description (aoti_cy._description), the same for every
    container of the library; ``unset`` (FQNs with no value yet, e.g. a
    package compiled without its weights) is this owner's own. Runs refuse
    while anything is unset: the model would read through null pointers.
    ``hint`` says how the owner's user gives values.
    """

    def __init__(self, description, device, hint):
        self.description = description
        self.device = device
        self.hint = hint
        self.unset = ()

    @property
    def constants(self):
        return self.description.constants

    @property
    def missing(self):
        """Whether some constant has no value: runs must refuse."""
        return bool(self.unset)

    @property
    def folds(self):
        """Whether the model folds constants (re-fold after new weights)."""
        return any([c.from_folded for c in self.constants])

    def fqn_to_name(self):
        return {c.original_fqn: c.name for c in self.constants}

    def note_present(self, names):
        """Record that the constants with these internal names have values
        (every other one that is not folded has none)."""
        self.unset = tuple(unset_constants(self.constants, names))

    def learn_shapes(self, shapes):
        """Keep ``shapes`` (internal name -> shape of each constant with a
        value) in the description once every constant has one: shapes are
        fixed at compile time. Returns the table for them."""
        if self.description.shapes is None and not unset_constants(self.constants, shapes):
            self.description.shapes = shapes
        return ConstantTable(self.constants, shapes, self.device)

    def table(self):
        """The ConstantTable that checks values, with the shapes known."""
        return ConstantTable(self.constants, self.description.shapes or {}, self.device)

    def missing_message(self, owner):
        names = list(self.unset)
        shown = ", ".join(map(repr, names[:6])) + (
            f" and {len(names) - 6} more" if len(names) > 6 else "")
        return (f"this {owner} has no value yet for {len(names)} constants ({shown}): "
                f"its package holds no weights; give them first ({self.hint})")


class ConstantTable:
    """A model's constants by internal name and FQN, with their shapes where
    known, for one device."""

    def __init__(self, constants, shapes, device):
        self.constants = tuple(constants)
        self.shapes = shapes or {}
        self.device = device
        self._by_name = {c.name: c for c in self.constants}
        self._by_fqn = {c.original_fqn: c for c in self.constants}

    def lookup(self, key):
        """The ConstantInfo named ``key`` (original FQN or internal name), or None."""
        return self._by_fqn.get(key) or self._by_name.get(key)

    def check(self, mapping, uncopied=False):
        """({internal name: tensor ready for the runtime}, [unknown keys]);
        raises ValueError naming every value whose dtype, shape, size or
        device does not fit, TypeError for a value that is not a tensor.

        ``uncopied``: the runtime will read the given memory itself
        (``Model``, user-managed constants) rather than copy it into its slot.
        Where the shape is unknown, a value shorter than the slot is then
        copied into a slot-sized buffer, so kernels never read past it."""
        if not hasattr(mapping, "items"):
            raise TypeError(f"constants must be given as a mapping, got "
                            f"{type(mapping).__name__}")
        values, unknown, wrong = {}, [], []
        for key, value in mapping.items():
            info = self.lookup(key)
            if info is None:
                unknown.append(key)
                continue
            tensor = _as_tensor(key, value)
            problem = self._problem(key, info, tensor)
            if problem:
                wrong.append(problem)
                continue
            # A copy reads the whole storage from the data pointer, so hand it
            # a tensor whose storage is exactly its own elements; memory used
            # in place (a view into a larger mapping) need only be contiguous.
            if not tensor.is_contiguous() or (not uncopied and (
                    tensor.storage_offset() != 0
                    or tensor.untyped_storage().nbytes() != tensor.nbytes)):
                tensor = tensor.clone(memory_format=torch.contiguous_format)
            if (uncopied and info.name not in self.shapes and info.data_size
                    and tensor.nbytes < info.data_size):
                tensor = _padded(tensor, info.data_size)
            values[info.name] = tensor.detach()
        if wrong:
            raise ValueError("constants do not match the model: " + "; ".join(wrong))
        return values, unknown

    def _problem(self, key, info, tensor):
        if tensor.dtype != info.dtype:
            return f"{key!r} has dtype {tensor.dtype}, expected {info.dtype}"
        shape = self.shapes.get(info.name)
        if shape is not None and tuple(tensor.shape) != shape:
            return f"{key!r} has shape {tuple(tensor.shape)}, expected {shape}"
        slot = info.data_size
        if slot is not None and (tensor.nbytes > slot or (
                shape is None and _aligned(tensor.nbytes) != _aligned(slot))):
            return (f"{key!r} has {tensor.nbytes} bytes (shape "
                    f"{tuple(tensor.shape)}), the model's slot for it {slot}")
        if tensor.device != self.device and tensor.device.type != "cpu":
            return f"{key!r} is on {tensor.device}, the model on {self.device}"
        return None

    def checked_update(self, mapping, *, full_update=False, uncopied=False):
        """``check`` for an update entry point: {internal name: tensor}, or
        ValueError naming unknown keys and, with ``full_update``, constants
        left without a value."""
        values, unknown = self.check(mapping, uncopied=uncopied)
        problems = []
        if unknown:
            known = sorted(c.original_fqn for c in self.constants)
            problems.append(f"unknown keys {unknown} (the model's constants are {known})")
        missing = self.unset(values) if full_update else []
        if missing:
            problems.append(f"missing constants {missing} (a full update needs a "
                            f"value for every constant that is not folded)")
        if problems:
            raise ValueError("; ".join(problems))
        return values

    def unset(self, values):
        """FQNs of the constants that are not folded and have no value in
        ``values`` (internal name -> tensor)."""
        return unset_constants(self.constants, values)

    def match_state_dict(self, state_dict):
        """Match a module's ``state_dict()`` against the constants.

        Returns ``(values, problems)``: the checked values by internal name,
        and per-key explanations of what a strict load refuses. Accepted
        without complaint: keys that alias a constant given under another key
        with the same value (tied weights, e.g. GPT-2's input and output
        embeddings), integer scalars that no constant holds (counters such as
        BatchNorm's ``num_batches_tracked``, which inference does not read),
        and constants that are buffers or lifted tensors absent from the
        state dict (non-persistent buffers never appear in one).
        """
        values, unknown = self.check(state_dict)
        problems, unmatched = [], []
        given = {self.lookup(k).name: v for k, v in state_dict.items()
                 if self.lookup(k) is not None}
        absent = [c for c in self.constants
                  if not c.from_folded and c.name not in values and c.data_size != 0
                  and c.type not in (BUFFER, TENSOR_CONSTANT)]
        for key in unknown:
            if not isinstance(state_dict[key], (torch.Tensor, numpy.ndarray)):
                continue   # extra state (get_extra_state) is no constant
            tensor = _as_tensor(key, state_dict[key])
            twins = [name for name, value in given.items()
                     if value.shape == tensor.shape and value.dtype == tensor.dtype]
            if any(_same_value(tensor, given[name]) for name in twins):
                continue   # a tied alias of a constant given under another key
            if tensor.dim() == 0 and not (tensor.is_floating_point() or tensor.is_complex()):
                continue   # a counter such as BatchNorm's num_batches_tracked
            unmatched.append(key)
            if twins:
                fqns = [self._by_name[n].original_fqn for n in twins]
                problems.append(f"if {key!r} is tied to {' or '.join(map(repr, fqns))}, "
                                f"give them the same value")
            # A checkpoint that keeps one name of tied weights (save_pretrained
            # drops lm_head.weight) names the one the model did not keep.
            for c in absent:
                if self._problem(key, c, tensor) is None:
                    problems.append(
                        f"if {key!r} is tied to {c.original_fqn!r} (a checkpoint keeping "
                        f"one name of tied weights), give it under that name too: "
                        f"state_dict[{c.original_fqn!r}] = state_dict[{key!r}]")
        if unmatched:
            problems.insert(0, f"unknown keys {unmatched}: {_COMPILED_IN}")
        missing = [c.original_fqn for c in absent]
        if missing:
            problems.insert(0, f"missing constants {missing} (weights of the model "
                               f"with no value in the state dict)")
        return values, problems


def weights_to_load(table, state_dict, *, strict, current):
    """The full update of the inactive buffer that ``load_weights`` makes
    from ``state_dict``: {internal name: tensor}. ``current()`` gives the
    active values (original FQN -> copy) that constants the state dict
    leaves out keep. ValueError, before anything changes, for what a strict
    load refuses and for constants that would have no value at all."""
    values, problems = table.match_state_dict(state_dict)
    if strict and problems:
        raise ValueError("load_weights(strict=True) changed nothing: " + "; ".join(problems))
    missing = table.unset(values)
    if missing:
        kept = current()
        unset = [fqn for fqn in missing if fqn not in kept]
        if unset:
            raise ValueError(
                f"load_weights: constants {unset} have no value yet (the package "
                f"holds no weights for them): give them too (non-persistent "
                f"buffers are not in a state_dict(): add them, e.g. "
                f"dict(module.state_dict(), **dict(module.named_buffers())))")
        for fqn in missing:
            values[table.lookup(fqn).name] = kept[fqn]
    return values
