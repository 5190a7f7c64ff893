"""A model's shape contract: every input's sizes and strides as expressions
of named size symbols, read once from the generated wrapper source.

Inductor writes, in ``run_impl`` of ``<stem>.wrapper.cpp`` (shipped in every
package, and left beside a bare ``.so``):

- one binding per size symbol, from the first input dim (or stride) that
  holds it: ``int64_t s52 = arg0_1_size[0];``, aliases ``int64_t s97 = s52;``,
  and solved ones ``int64_t s94 = (1.0/8.0)*arg0_1_size_1;`` for a dim
  exported as ``8 * k``;
- one assertion per input that a kernel reads, in terms of those symbols:
  ``assert_size_stride(arg1_1, {s52, s20}, {s20, 1L}, "input")`` (run by
  the model only under ``AOTI_RUNTIME_CHECK_INPUTS=1``);
- and, in ``check_input_<i>``, each input's dtype, device type and the
  bounds of each dim.

From these, :func:`contract_for` builds a :class:`ShapeContract` that
``csrc/shape_contract.cpp`` checks on every call, without the GIL: one symbol
bound to one value across all inputs, derived dims, strides (where the size
is above 1, as torch's own assertion compares them), and ranges on the
symbols, with the 0/1 rule applied to the symbol (a symbol whose minimum
inductor raised to 2 also runs at 1, as torch's runner does).

Sources that hold no assertions (torch before 2.13 writes none in AOT
mode, and an input no kernel reads gets none) are read differently: every
dynamic dim the model binds no symbol from equals an expression of a symbol
bound earlier (the model binds each symbol at its first input dim), and the
symbol is the one whose range maps onto the dim's bounds; where several
could, the dim keeps only its bounds. Static strides come from the model's
check; the strides of dynamic dims are then not checked. What is left
unchecked is listed in :attr:`ShapeContract.unchecked` (and by inspect).
"""

import functools
import math
import os
import re
from fractions import Fraction

import torch

from aoti_cy import _wrapper_source

__all__ = ["ShapeContract", "contract_for", "parse_expression"]

# Operation codes of the expression programs (csrc/shape_contract.h).
OP_CONST, OP_SYMBOL, OP_ADD, OP_SUB, OP_MUL, OP_FLOORDIV, OP_MOD, OP_MAX, OP_MIN, OP_NEG = range(10)
# Where a binding reads its value (csrc/shape_contract.h).
FROM_SIZE, FROM_STRIDE, FROM_SYMBOL = range(3)
NO_LIMIT = -1

_INPUT_VAR = re.compile(r"auto (\w+) = std::move\(inputs\[(\d+)\]\);")
_BINDING = re.compile(r"^\s*int64_t (\w+) = ([^;]+);", re.M)
_ASSERT = re.compile(
    r'assert_size_stride\((\w+), \{([^{}]*)\}, \{([^{}]*)\}, "input"\);')
_SIZE_OR_STRIDE = re.compile(r"^(\w+)_(size|stride)\[(\d+)\]$")
_TEMP_VAR = re.compile(r"^(\w+)_(size|stride)_(\d+)$")

# c10::ScalarType numbering of the dtypes a model's checks name.
_SCALAR_TYPES = {
    torch.uint8: 0, torch.int8: 1, torch.int16: 2, torch.int32: 3, torch.int64: 4,
    torch.float16: 5, torch.float32: 6, torch.float64: 7, torch.complex64: 9,
    torch.complex128: 10, torch.bool: 11, torch.bfloat16: 15,
}
for _name, _code in (("float8_e5m2", 23), ("float8_e4m3fn", 24)):
    if hasattr(torch, _name):
        _SCALAR_TYPES[getattr(torch, _name)] = _code
_DEVICE_TYPES = {"CPU": 0, "CUDA": 1}


# ---- C expressions ----------------------------------------------------------

class UnsupportedExpression(ValueError):
    """An expression this module does not evaluate: the dim it describes is
    then left to the model's own check."""


_TOKEN = re.compile(r"\s*(?:(\d+\.\d*|\d*\.\d+)|(\d+)[lLuU]*|([A-Za-z_][\w:]*)|(.))")
_FUNCTIONS = {"c10::div_floor_integer": OP_FLOORDIV, "std::max": OP_MAX, "std::min": OP_MIN}


def _tokens(text):
    text = re.sub(r"static_cast<\s*(?:int64_t|long|int)\s*>", "", text)
    tokens = []
    for real, integer, name, other in _TOKEN.findall(text):
        if real:
            tokens.append(("num", Fraction(real)))
        elif integer:
            tokens.append(("num", int(integer)))
        elif name:
            tokens.append(("name", name))
        elif other.strip():
            tokens.append(("op", other))
    return tokens


def parse_expression(text):
    """The C++ expression ``text`` (as inductor prints sizes) as a tree:
    ``("num", v)``, ``("name", n)``, ``(op, a, b)`` for ``+ - * / %`` and
    the functions, ``("neg", a)``. Raises UnsupportedExpression."""
    tokens = _tokens(text)
    position = 0

    def peek():
        return tokens[position] if position < len(tokens) else (None, None)

    def take(kind=None, value=None):
        nonlocal position
        token = peek()
        if token[0] is None or (kind and token[0] != kind) or (value and token[1] != value):
            raise UnsupportedExpression(f"cannot read {text!r}")
        position += 1
        return token

    def primary():
        kind, value = peek()
        if kind == "num":
            take()
            return ("num", value)
        if kind == "name":
            take()
            if peek() == ("op", "("):
                if value not in _FUNCTIONS:
                    raise UnsupportedExpression(f"{value}() in {text!r}")
                take("op", "(")
                first = additive()
                take("op", ",")
                second = additive()
                take("op", ")")
                return (value, first, second)
            return ("name", value)
        if (kind, value) == ("op", "("):
            take()
            inner = additive()
            take("op", ")")
            return inner
        if (kind, value) == ("op", "-"):
            take()
            return ("neg", primary())
        raise UnsupportedExpression(f"cannot read {text!r}")

    def multiplicative():
        node = primary()
        while peek() in (("op", "*"), ("op", "/"), ("op", "%")):
            op = take()[1]
            node = (op, node, primary())
        return node

    def additive():
        node = multiplicative()
        while peek() in (("op", "+"), ("op", "-")):
            op = take()[1]
            node = (op, node, multiplicative())
        return node

    tree = additive()
    if position != len(tokens):
        raise UnsupportedExpression(f"cannot read {text!r}")
    return tree


def _evaluate(tree, values):
    """``tree``'s value with ``values`` for its names: exact (Fractions where
    C++ would compute in double), for analysing bindings at load."""
    kind = tree[0]
    if kind == "num":
        return tree[1]
    if kind == "name":
        return values[tree[1]]
    if kind == "neg":
        return -_evaluate(tree[1], values)
    a, b = _evaluate(tree[1], values), _evaluate(tree[2], values)
    if kind == "+":
        return a + b
    if kind == "-":
        return a - b
    if kind == "*":
        return a * b
    if kind == "/":
        if isinstance(a, Fraction) or isinstance(b, Fraction):
            return Fraction(a) / b
        return int(a / b) if b else 0           # C++ integer division truncates
    if kind == "%":
        return a - b * int(a / b) if b else 0
    if kind == "c10::div_floor_integer":
        return a // b if b else 0
    if kind == "std::max":
        return max(a, b)
    return min(a, b)


def _names_in(tree):
    if tree[0] == "name":
        return {tree[1]}
    if tree[0] == "num":
        return set()
    return set().union(*(_names_in(child) for child in tree[1:]))


_BINARY_OPS = {"+": OP_ADD, "-": OP_SUB, "*": OP_MUL, "c10::div_floor_integer": OP_FLOORDIV,
               "%": OP_MOD, "std::max": OP_MAX, "std::min": OP_MIN}


def _program(tree, slots):
    """``tree`` as (op, argument) pairs of an integer stack machine;
    ``slots`` maps symbol names to their slots."""
    kind = tree[0]
    if kind == "num":
        if isinstance(tree[1], Fraction):
            raise UnsupportedExpression("a size computed in floating point")
        return [(OP_CONST, tree[1])]
    if kind == "name":
        if tree[1] not in slots:
            raise UnsupportedExpression(f"{tree[1]} is never bound")
        return [(OP_SYMBOL, slots[tree[1]])]
    if kind == "neg":
        return _program(tree[1], slots) + [(OP_NEG, 0)]
    if kind == "/" or kind not in _BINARY_OPS:
        # Sizes are never printed with a bare "/" between integers.
        raise UnsupportedExpression(f"operator {kind}")
    return _program(tree[1], slots) + _program(tree[2], slots) + [(_BINARY_OPS[kind], 0)]


def _text(tree):
    """``tree`` as a readable formula ("?" for None: a dim left unchecked)."""
    if tree is None:
        return "?"
    kind = tree[0]
    if kind == "num":
        return str(tree[1])
    if kind == "name":
        return tree[1]
    if kind == "neg":
        return f"-{_text(tree[1])}"
    a, b = _text(tree[1]), _text(tree[2])
    if kind == "c10::div_floor_integer":
        return f"({a} // {b})"
    if kind in ("std::max", "std::min"):
        return f"{kind[5:]}({a}, {b})"
    if kind == "*" and tree[1][0] == "num":
        return f"{a}*{b}"
    return f"{a} {kind} {b}" if kind in "+-" else f"{a}{kind}{b}"


def _linear(tree, name):
    """``a`` where ``tree == a*name + rest``, ``a`` a constant int and
    ``rest`` free of ``name`` (checked at several points), else None."""
    others = sorted(_names_in(tree) - {name})
    samples = []
    for trial, base in enumerate((3, 7)):
        values = {other: base + 2 * k for k, other in enumerate(others)}
        points = [_evaluate(tree, {**values, name: x}) for x in (0, 1, 2, 5, 11)]
        slope = points[1] - points[0]
        if any(points[k] != points[0] + slope * x for k, x in enumerate((0, 1, 2, 5, 11))):
            return None
        samples.append(slope)
    if samples[0] != samples[1] or samples[0] == 0 or int(samples[0]) != samples[0]:
        return None
    return int(samples[0])


# ---- the contract -----------------------------------------------------------

class Binding:
    """Symbol ``symbol`` is ``(p * source + q) / d`` exactly (refused when
    not whole), where source is size or stride ``dim`` of input ``input``,
    or another symbol's slot."""

    def __init__(self, symbol, kind, input, dim, p, q, d):
        self.symbol, self.kind, self.input, self.dim = symbol, kind, input, dim
        self.p, self.q, self.d = p, q, d


class ShapeContract:
    """What the generated source says about the inputs.

    ``symbols``: names of the size symbols, by slot. ``ranges``: per slot,
    ``(low, high)`` with the 0/1 rule applied (high None: unbounded).
    ``inputs``: per input, None when no assertion covers it, else a dict with
    ``dtype``, ``device_type``, ``sizes`` and ``strides`` (expression trees)
    and ``bounds`` (per dim (low, high) from the model's check).
    ``origin``: per slot, (input, dim) whose size first gives it, or None.
    """

    def __init__(self, source_path):
        self.source_path = source_path
        self.symbols = []
        self.ranges = []
        self.origin = []
        self.bindings = []
        self.inputs = []
        self.unchecked = []        # (input, reason) the contract leaves to the model
        self.asserted = False      # whether the source asserts the inputs' shapes

    @property
    def covered(self):
        """Indices of the inputs the contract checks in full."""
        return [i for i, spec in enumerate(self.inputs) if spec is not None]

    @staticmethod
    def formula(tree):
        """A size or stride tree as text (``8*s94``; "?" where unknown)."""
        return _text(tree)

    # -- encoding for csrc/shape_contract.cpp --

    def encode(self, labels):
        """(int64 program, strings) for ``aoti_cy_shape_contract_new``:
        ``labels`` name each input for messages."""
        slots = {name: k for k, name in enumerate(self.symbols)}
        words = [len(self.symbols), len(self.inputs), len(self.bindings)]
        for low, high in self.ranges:
            words += [low, NO_LIMIT if high is None else high]
        for b in self.bindings:
            words += [b.symbol, b.kind, b.input, b.dim, b.p, b.q, b.d]
        strings = list(labels) + list(self.symbols)
        for i, spec in enumerate(self.inputs):
            if spec is None:
                words.append(-1)
                continue
            words += [len(spec["sizes"]), _SCALAR_TYPES.get(spec["dtype"], -1),
                      _DEVICE_TYPES.get(spec["device_type"], -1)]
            for d, (size, stride) in enumerate(zip(spec["sizes"], spec["strides"])):
                for tree in (size, stride):
                    program = _program(tree, slots) if tree is not None else []
                    words.append(len(program))
                    for op, argument in program:
                        words += [op, argument]
                    strings.append(_text(tree) if tree is not None else "")
                low, high = spec["dim_bounds"][d]
                words += [low, NO_LIMIT if high is None else high]
        return words, strings

    # -- trial inputs, for inspect --

    def trial_values(self, shift):
        """Values of the symbols (by name) for a trial call: distinct from
        each other where the ranges allow, ``shift`` moving them all."""
        values, used = {}, set()
        for b in self.bindings:
            name = self.symbols[b.symbol]
            if b.kind == FROM_SYMBOL:
                continue    # an alias: the sizes name the symbol it copies
            low, high = self.ranges[b.symbol]
            low = max(low, 2)
            high = high if high is not None else low + 64
            options = [v for v in range(low + shift, high + 1) if v not in used] or [low]
            values[name] = options[0]
            used.add(options[0])
        return values

    def trial_sizes(self, values):
        """Each covered input's sizes for symbol ``values``; None for an
        input the contract does not cover or cannot size."""
        sizes = []
        for spec in self.inputs:
            try:
                sizes.append(None if spec is None else
                             [int(_evaluate(tree, values)) for tree in spec["sizes"]])
            except (TypeError, KeyError):
                sizes.append(None)
        return sizes

    # -- description, for inspect --

    def describe(self, labels):
        """Readable lines: each input's dims by symbol, the symbols' ranges
        and where they come from, and what is left unchecked."""
        lines = []
        for i, spec in enumerate(self.inputs):
            if spec is None:
                continue
            dims = ", ".join(map(_text, spec["sizes"]))
            lines.append(f"{labels[i]} [{dims}]")
        aliases = {b.symbol for b in self.bindings if b.kind == FROM_SYMBOL}
        for slot, name in enumerate(self.symbols):
            if slot in aliases:
                continue
            low, high = self.ranges[slot]
            where = self.origin[slot]
            source = f" (from {labels[where[0]]} dim {where[1]})" if where else ""
            lines.append(f"{name} in [{low}, {'inf' if high is None else high}]{source}")
        for i, reason in self.unchecked:
            lines.append(f"{labels[i]}: {reason}")
        return lines

    def to_json(self, labels):
        aliases = {b.symbol for b in self.bindings if b.kind == FROM_SYMBOL}
        return {
            "source": os.path.basename(self.source_path),
            "inputs": [None if spec is None else {
                "name": labels[i],
                "sizes": [_text(t) if t is not None else None for t in spec["sizes"]],
                "strides": [_text(t) if t is not None else None for t in spec["strides"]],
            } for i, spec in enumerate(self.inputs)],
            "symbols": [{"name": name, "min": self.ranges[k][0], "max": self.ranges[k][1],
                         "from": None if self.origin[k] is None else
                         {"input": labels[self.origin[k][0]], "dim": self.origin[k][1]}}
                        for k, name in enumerate(self.symbols) if k not in aliases],
            "unchecked": [{"input": labels[i], "reason": r} for i, r in self.unchecked],
        }


def contract_for(library_path, num_inputs):
    """The shape contract of the model library at ``library_path``, from the
    wrapper source beside it; None when there is no such source."""
    source = _wrapper_source.wrapper_source_for(library_path)
    if source is None:
        return None
    stat = os.stat(source)
    return _read_cached(source, stat.st_size, stat.st_mtime_ns, num_inputs)


@functools.lru_cache(maxsize=64)
def _read_cached(source, size, mtime, num_inputs):
    with open(source, encoding="utf-8", errors="replace") as f:
        text = f.read()
    return _read(source, text, num_inputs)


def _read(source, text, num_inputs):
    contract = ShapeContract(source)
    start = text.find("AOTInductorModel::run_impl(")
    body = text[start:] if start >= 0 else ""
    checks = _wrapper_source.read_inputs(source, num_inputs)
    variables = {name: int(index) for name, index in _INPUT_VAR.findall(body)}
    end = body.find("inputs.clear();")
    _read_bindings(contract, body[:end if end >= 0 else len(body)], variables)
    slots = {name: k for k, name in enumerate(contract.symbols)}
    asserted = {}
    for variable, sizes, strides in _ASSERT.findall(body):
        if variable in variables:
            asserted[variables[variable]] = (sizes, strides)
    contract.asserted = bool(asserted)
    bound_ranges = _bound_ranges(contract, checks)
    for i in range(num_inputs):
        contract.inputs.append(_input_spec(contract, i, asserted.get(i), checks[i], slots,
                                           bound_ranges))
    _read_ranges(contract, checks)
    return contract


def _read_bindings(contract, text, variables):
    temps = {}          # argX_size_d -> (kind, input, dim)
    for name, value in _BINDING.findall(text):
        value = value.strip()
        plain = _SIZE_OR_STRIDE.match(value)
        if plain and plain.group(1) in variables:
            source = (FROM_SIZE if plain.group(2) == "size" else FROM_STRIDE,
                      variables[plain.group(1)], int(plain.group(3)))
            if _TEMP_VAR.match(name):
                temps[name] = source
                continue
            _bind(contract, name, *source, 1, 0, 1)
            continue
        try:
            tree = parse_expression(value)
        except UnsupportedExpression:
            continue
        names = _names_in(tree)
        if len(names) != 1:
            continue
        (name_in,) = names
        if name_in in temps:
            kind, index, dim = temps[name_in]
        elif name_in in contract.symbols:
            kind, index, dim = FROM_SYMBOL, contract.symbols.index(name_in), 0
        else:
            continue
        q = Fraction(_evaluate(tree, {name_in: 0}))
        slope = Fraction(_evaluate(tree, {name_in: 1})) - q
        if _evaluate(tree, {name_in: 7}) != q + 7 * slope or slope == 0:
            continue        # not linear: leave the symbol unbound
        d = math.lcm(slope.denominator, q.denominator)
        _bind(contract, name, kind, index, dim, int(slope * d), int(q * d), d)


def _bind(contract, name, kind, index, dim, p, q, d):
    if name in contract.symbols:
        return
    slot = len(contract.symbols)
    contract.symbols.append(name)
    contract.ranges.append((0, None))
    if kind == FROM_SYMBOL:
        contract.origin.append(contract.origin[index])
    else:
        contract.origin.append((index, dim) if kind == FROM_SIZE else None)
    contract.bindings.append(Binding(slot, kind, index, dim, p, q, d))


def _split(items):
    """``"s52, std::max(s0, 1L)"`` -> ["s52", "std::max(s0, 1L)"]: the
    commas outside parentheses; one-dim lists end in a comma."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(items):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(items[start:i])
            start = i + 1
    parts.append(items[start:])
    return [part.strip() for part in parts if part.strip()]


def _input_spec(contract, index, asserted, check, slots, bound_ranges):
    """Input ``index``'s spec (dtype, device type, size and stride trees,
    dim bounds), or None when the contract leaves it to the model's check."""
    if check.dtype is None or check.device_type is None:
        contract.unchecked.append(
            (index, "its dtype or device is not in the source: only the model's own "
                    "per-input check applies"))
        return None
    spec = {"dtype": check.dtype, "device_type": check.device_type.upper(),
            "sizes": [], "strides": [], "dim_bounds": []}
    if asserted is None:
        return _inferred_spec(contract, index, check, bound_ranges, spec)
    sizes, strides = (_split(part) for part in asserted)
    if len(sizes) != len(strides):
        contract.unchecked.append((index, "its assertion does not parse"))
        return None
    for d, (size, stride) in enumerate(zip(sizes, strides)):
        spec["sizes"].append(_checked_tree(contract, index, f"dim {d}", size, slots))
        spec["strides"].append(_checked_tree(contract, index, f"stride {d}", stride, slots))
        entry = check.dims.get(d, {})
        spec["dim_bounds"].append((entry.get("min", 0), entry.get("max")))
    return spec


def _bound_ranges(contract, checks):
    """{slot: (low, high)} of each symbol bound from a tensor dim, from that
    dim's bounds in the model's check."""
    ranges = {}
    for b in contract.bindings:
        entry = checks[b.input].dims.get(b.dim, {}) if b.kind == FROM_SIZE else {}
        if "min" in entry:
            low = -(-(b.p * entry["min"] + b.q) // b.d)
            high = None if entry.get("max") is None else (b.p * entry["max"] + b.q) // b.d
            ranges[b.symbol] = (low, high)
    return ranges


def _dim_of_binding(binding, name):
    """The size tree of the dim a binding reads: ``(d*s - q) / p``."""
    if binding.p == 0 or (binding.d % binding.p) or (binding.q % binding.p):
        return None
    scale, offset = binding.d // binding.p, -binding.q // binding.p
    tree = ("name", name) if scale == 1 else ("*", ("num", scale), ("name", name))
    return tree if offset == 0 else ("+", ("num", offset), tree)


def _inferred_spec(contract, index, check, ranges, spec):
    """Fill ``spec`` for an input without an assertion: static dims and
    strides from the model's check, symbol dims from the bindings, and each
    other dynamic dim tied to the one symbol whose range maps onto its
    bounds."""
    if not check.dims:
        # No dim in the check: a 0-d input, or a rank the source does not say.
        contract.unchecked.append(
            (index, "the source holds no assertion of its shape and its check names no "
                    "dim: only the model's own per-input check applies"))
        return None
    bound_here = {(b.input, b.dim): b for b in contract.bindings if b.kind == FROM_SIZE}
    loose = []
    for d in range(check.rank):
        entry = check.dims.get(d, {})
        low, high = entry.get("min", 0), entry.get("max")
        tree = None
        if "size" in entry:
            tree = ("num", entry["size"])
        elif (index, d) in bound_here:
            binding = bound_here[(index, d)]
            tree = _dim_of_binding(binding, contract.symbols[binding.symbol])
        else:
            tree = _tie_by_bounds(contract, ranges, low, high)
        if tree is None and "size" not in entry:
            loose.append(d)
        spec["sizes"].append(tree)
        stride = check.strides.get(d)
        spec["strides"].append(("num", stride) if stride is not None else None)
        spec["dim_bounds"].append((low, high))
    dynamic_strides = [d for d in range(check.rank) if d not in check.strides]
    if dynamic_strides:
        contract.unchecked.append(
            (index, f"the strides of dims {dynamic_strides} are not checked: the source "
                    f"holds no assertion of them (pass contiguous tensors)"))
    if loose:
        contract.unchecked.append(
            (index, f"dims {loose} are checked against their bounds only: the source does "
                    f"not say which symbol they share"))
    return spec


def _tie_by_bounds(contract, ranges, low, high):
    """``a*s + b`` for the bound symbol ``s`` whose range maps onto
    ``[low, high]``: the one symbol with exactly those bounds (ties are
    mostly plain equalities), else the one linear map; None when none or
    several could."""
    equal = [slot for slot, bounds in ranges.items() if bounds == (low, high)]
    if len(equal) == 1:
        return ("name", contract.symbols[equal[0]])
    if equal:
        return None
    found = []
    for slot, (s_low, s_high) in ranges.items():
        if high is None or s_high is None or s_high == s_low:
            continue
        a, rest = divmod(high - low, s_high - s_low)
        b = low - a * s_low
        if rest == 0 and a >= 1 and (a, b) != (1, 0):
            found.append((slot, a, b))
    if len(found) != 1:
        return None
    slot, a, b = found[0]
    name = ("name", contract.symbols[slot])
    tree = name if a == 1 else ("*", ("num", a), name)
    return tree if b == 0 else ("+", ("num", b), tree)


def _checked_tree(contract, index, what, text, slots):
    """The expression tree of one asserted size or stride, or None (noted in
    ``unchecked``) when it cannot be evaluated."""
    try:
        tree = parse_expression(text)
        _program(tree, slots)
        return tree
    except UnsupportedExpression as e:
        contract.unchecked.append((index, f"{what} ({text}) is not checked: {e}"))
        return None


def _read_ranges(contract, checks):
    """Each symbol's range, from the bounds the model's checks put on the
    dims that are ``a*symbol + b``; the 0/1 rule then lets a minimum of 2
    (inductor's specialisation of 0 and 1, not the export's) run at 1. The
    per-dim bounds of other dims stay (upper bounds only)."""
    ranges = {}
    for i, spec in enumerate(contract.inputs):
        if spec is None:
            continue
        for d, tree in enumerate(spec["sizes"]):
            low, high = spec["dim_bounds"][d]
            if tree is None:
                spec["dim_bounds"][d] = (1 if low == 2 else low, high)
                continue
            if tree[0] == "num":
                spec["dim_bounds"][d] = (0, None)
                continue
            names = _names_in(tree)
            if len(names) != 1:
                spec["dim_bounds"][d] = (0, high)
                continue
            (name,) = names
            slope = _linear(tree, name)
            if slope is None or slope < 0 or name not in contract.symbols:
                spec["dim_bounds"][d] = (0, high)
                continue
            offset = _evaluate(tree, {name: 0})
            s_low = -(-(low - offset) // slope)
            s_high = None if high is None else (high - offset) // slope
            known = ranges.get(name, (0, None))
            ranges[name] = (max(known[0], s_low),
                            s_high if known[1] is None else
                            (known[1] if s_high is None else min(known[1], s_high)))
            spec["dim_bounds"][d] = (0, None)     # checked on the symbol
    for slot, name in enumerate(contract.symbols):
        low, high = ranges.get(name, (0, None))
        contract.ranges[slot] = (1 if low == 2 else low, high)
