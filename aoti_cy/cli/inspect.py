"""``python -m aoti_cy inspect``: what a package holds and what it needs.

For every model of a package: each input and output by the name a caller
knows it by (from the call spec), its dtype, shape (dynamic dims with their
ranges) and device; where its weights are; and whether it can run here as it
is. The information comes from three places, because no one of them has it
all: the model library itself (a container: names, call spec, constants,
weights present), the wrapper source torch ships beside it (input dtypes,
sizes and dynamic ranges; see ``_wrapper_source``), and one trial run on
zero-filled inputs (output dtypes and shapes, and which input dims they
follow), which ``run=False`` skips.
"""

import json
import os

import torch

from aoti_cy import _spec_tree
from aoti_cy._call_checks import input_labels, shape_contract_of
from aoti_cy._constants import unset_constants
from aoti_cy._elf import asks_for_executable_stack, stack_flags, stack_text
from aoti_cy._extern_nodes import json_path_for, read_nodes
from aoti_cy._package import list_models, open_artifact
from aoti_cy._wrapper_source import read_inputs, wrapper_source_for
from aoti_cy.errors import PackageError

__all__ = ["inspect_package"]


def inspect_package(path, model_name=None, run=True):
    """A JSON-ready report on the package at ``path`` (``.pt2``, extracted
    folder or model ``.so``): every model, or only ``model_name``."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such model artifact: {path}")
    names = list(list_models(path))
    if model_name is not None:
        if names and model_name not in names:
            raise PackageError(f"no model named {model_name!r} in {path}; it holds "
                               f"{', '.join(map(repr, names))}")
        names = [model_name] if names else []
    kind = ("library" if not names and path.endswith(".so")
            else "directory" if os.path.isdir(path) else "pt2")
    models = [_inspect_model(path, name, run) for name in (names or ["model"])]
    return {"package": os.path.abspath(path), "kind": kind,
            "models_in_package": list(list_models(path)),
            "torch": torch.__version__, "models": models}


def _inspect_model(path, name, run):
    report = {"name": name, "files": [], "needs": [], "notes": []}
    try:
        artifact = open_artifact(path, name)
    except PackageError as e:
        report.update(runs_as_is=False, load_error=str(e))
        if "no compiled .so" in str(e):
            report["needs"].append("a C++ build: the package ships C++ sources only "
                                   "(aot_inductor.package_cpp_only)")
        else:
            report["needs"].append(f"a loadable package: {e}")
        return report
    try:
        _describe_artifact(report, artifact)
        _describe_stack(report, artifact)
        _describe_model(report, artifact, run)
    finally:
        artifact.cleanup()
    report["runs_as_is"] = not report["needs"]
    return report


# ---- files and weights ---------------------------------------------------------


def _package_relative(file_path, artifact):
    """A file's path inside the package (``data/aotinductor/...``), never one
    into the temporary folder a ``.pt2`` was unpacked in."""
    if artifact.cubin_dir is None:      # a bare .so
        return os.path.basename(file_path)
    root = os.path.dirname(os.path.dirname(os.path.dirname(artifact.cubin_dir)))
    return os.path.relpath(file_path, root)


_ROLES = ((".wrapper.so", "model library"), (".so", "kernel library"),
          (".wrapper.cpp", "C++ source (wrapper)"), (".cpp", "C++ source (kernels)"),
          (".blob", "weights blob"), ("weights_config.json", "pickled weights index"),
          ("_metadata.json", "metadata"), (".wrapper.json", "fallback ops (extern nodes)"),
          (".cubin", "GPU kernel"), (".hsaco", "GPU kernel"), (".o", "object file"))


def _role(filename):
    return next((role for suffix, role in _ROLES if filename.endswith(suffix)), "other")


def _describe_artifact(report, artifact):
    folder = os.path.dirname(artifact.library_path)
    files = sorted(os.listdir(folder)) if artifact.cubin_dir else [
        os.path.basename(artifact.library_path)]
    for filename in files:
        full = os.path.join(folder, filename)
        if os.path.isfile(full):
            report["files"].append({"path": _package_relative(full, artifact),
                                    "bytes": os.path.getsize(full), "role": _role(filename)})
    weights = {"stored": "in the .so", "files": []}
    if artifact.weights_blob is not None:
        weights["stored"] = "in a blob beside the .so (binary_blob)"
        weights["files"] = [_package_relative(artifact.weights_blob, artifact)]
    elif artifact.weights_config is not None:
        weights["stored"] = "in pickled files (pickle_weights)"
        try:
            with open(artifact.weights_config) as f:
                config = json.load(f)
            names = sorted({os.path.basename(entry[0]) for entry in config.values()})
        except (OSError, ValueError, TypeError, IndexError):
            names = []
        for filename in names:
            full = os.path.join(artifact.weights_dir, filename)
            size = os.path.getsize(full) if os.path.isfile(full) else None
            weights["files"].append(_package_relative(full, artifact))
            report["files"].append({"path": weights["files"][-1], "bytes": size,
                                    "role": "pickled weights"})
    report["weights"] = weights
    report["metadata"] = artifact.metadata
    report["device"] = artifact.device


def _describe_stack(report, artifact):
    """What the library's PT_GNU_STACK header asks for, as shipped; whether
    the loaded library keeps an executable stack is filled in on load."""
    flags = artifact.shipped_stack_flags
    if flags is None:
        try:
            flags = stack_flags(artifact.library_path)
        except (OSError, PackageError):
            return   # the load reports what is wrong with the file
    report["stack"] = {"in_file": stack_text(flags),
                       "executable_in_file": asks_for_executable_stack(flags),
                       "loaded_executable": None}


# ---- the model -----------------------------------------------------------------


def _describe_model(report, artifact, run):
    ops = _fallback_ops(artifact.library_path)
    report["fallback_ops"] = ops
    missing_ops = [op["op"] for op in ops if not op["registered"]]
    if missing_ops:
        report["needs"].append(
            f"ops not registered in this process: {', '.join(missing_ops)} (import the "
            f"module that defines them first, e.g. --import MODULE)")
    container, error = _container(artifact, executor=not missing_ops)
    report["load_error"] = error
    source = wrapper_source_for(artifact.library_path)
    if container is None:
        report["needs"].append(f"a container: {error}")
        report["inputs"] = report["outputs"] = []
        return
    if "stack" in report:
        report["stack"]["loaded_executable"] = container.library.executable_stack
    try:
        report["exports"] = container.library.exported()
        _describe_constants(report, container)
        checks = (read_inputs(source, container.num_inputs) if source else None)
        if checks is None:
            report["notes"].append("no wrapper source beside the .so: input dtypes and "
                                   "shapes are not known")
        in_tree = _spec_tree.parse_spec(container.call_spec[0])
        out_tree = _spec_tree.parse_spec(container.call_spec[1])
        report["inputs"] = _inputs(report, container, in_tree, checks)
        contract = _describe_contract(report, container)
        outputs = None
        if run and checks is not None and not report["needs"]:
            outputs = _trial_outputs(report, container, checks, contract)
        elif run and report["needs"]:
            report["notes"].append("output dtypes and shapes are not known: the model "
                                   "cannot run here as it is")
        elif not run:
            report["notes"].append("output dtypes and shapes need a trial run "
                                   "(skipped: --no-run)")
        report["outputs"] = _outputs(report, container, out_tree, outputs)
        # A tree only where its leaves are the model's tensors, one for one.
        in_roots = _spec_tree.input_roots(in_tree)
        report["input_tree"] = (_tree_json(in_roots) if len(_spec_tree.leaves(in_roots))
                                == container.num_inputs else None)
        report["output_tree"] = (out_tree.to_json() if out_tree is not None and len(
            _spec_tree.leaves(_spec_tree.output_roots(out_tree))) == container.num_outputs
            else None)
    finally:
        container.close()


def _fallback_ops(library_path):
    """The ops the model calls through the proxy executor, and whether each
    is registered in this process."""
    json_path = json_path_for(library_path)
    if not os.path.isfile(json_path):
        return []
    ops = {}
    for node in read_nodes(json_path):
        name = f"{node.op_name}.{node.overload}" if node.overload else node.op_name
        if name not in ops:
            try:
                torch._C._dispatch_find_schema_or_throw(node.op_name, node.overload)
                registered = True
            except RuntimeError:
                registered = False
            ops[name] = {"op": name, "custom_op": bool(node.custom_op),
                         "registered": registered}
    return list(ops.values())


def _container(artifact, executor):
    """A container of the model with its weights, and None or why not."""
    from aoti_cy._proxy_executor import executor_for
    from aoti_cy.interface import ModelContainer, load_package_weights
    container = None
    try:
        container = ModelContainer(
            artifact.library_path, device=artifact.device, cubin_dir=artifact.cubin_dir,
            proxy_executor=(executor_for(artifact.library_path, artifact.device)
                            if executor else None))
        load_package_weights(container, artifact)
        return container, None
    except Exception as e:  # noqa: BLE001 - reported, not raised: the rest still shows
        if container is not None:
            container.close()
        return None, f"{type(e).__name__}: {e}"


def _describe_constants(report, container):
    constants = container.constants
    present = {container.constant_fqns[fqn] for fqn in container.extract_constants_map()}
    missing = unset_constants(constants, present)
    folded = [c for c in constants if c.from_folded]
    weights = report["weights"]
    weights.update(
        count=len(constants), bytes=sum(c.data_size for c in constants if not c.from_folded),
        folded=len(folded), missing=missing,
        constants=[{"name": c.name, "fqn": c.original_fqn,
                    "dtype": str(c.dtype).replace("torch.", ""), "bytes": c.data_size,
                    "folded": c.from_folded} for c in constants])
    if missing and not report["weights"]["files"]:
        weights["stored"] = "nowhere: the package holds no weights"
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        report["needs"].append(
            f"weights: {len(missing)} constants have no value ({shown}); give them with "
            f"load_weights() or update_constant_buffer()")


def _leaf_names(leaves, count):
    """Each flat position's user-facing name (its pytree path), or None for
    all when the spec's leaves do not match the model's count."""
    names = [None] * count
    if len(leaves) == count:
        for path, index in leaves:
            names[index] = path
    return names


def _inputs(report, container, tree, checks):
    leaves = _spec_tree.leaves(_spec_tree.input_roots(tree))
    names = _leaf_names(leaves, container.num_inputs)
    if leaves and len(leaves) != container.num_inputs:
        report["notes"].append(
            f"the call spec has {len(leaves)} leaves ({', '.join(p for p, _ in leaves)}) "
            f"for {container.num_inputs} input tensors: the others were non-tensor "
            f"arguments fixed at export, and the package does not record which")
    inputs = []
    for i in range(container.num_inputs):
        check = checks[i] if checks else None
        inputs.append({
            "index": i, "name": names[i] or f"input {i}",
            "dtype": _dtype_name(check.dtype) if check else None,
            "shape": [_dim_json(check.dims[d]) for d in range(check.rank)] if check else None,
            "device": str(container.device)})
    return inputs


def _dim_json(entry):
    if "size" in entry:
        return entry["size"]
    low = entry["min"]
    # inductor's check puts the lower bound of a dynamic dim at 2; aoti_cy
    # runs 1 too (docs/input-checks.md)
    found = {"symbol": entry["symbol"], "min": 1 if low == 2 else low, "max": entry["max"]}
    if entry.get("candidates"):
        found["one_of"] = entry["candidates"]
    return found


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "") if dtype is not None else None


def _trial_values(checks):
    """Two sets of values for the input size symbols, distinct from each
    other and from the static sizes where the ranges allow, so an output dim
    can be matched to the input dim it follows."""
    taken = {e["size"] for c in checks for e in c.dims.values() if "size" in e}
    ranges = {}
    for check in checks:
        for entry in check.dims.values():
            if "size" not in entry:
                key = entry["symbol"] or id(entry)
                low = max(entry["min"], 2)
                high = entry["max"] if entry["max"] is not None else low + 64
                ranges.setdefault(key, (low, high))
    picks = []
    for shift in (1, 2):
        values, used = {}, set(taken)
        for key, (low, high) in ranges.items():
            options = [v for v in range(low + shift, high + 1) if v not in used] or [low]
            values[key] = options[0]
            used.add(options[0])
        picks.append(values)
    return picks


def _trial_shape(check, values):
    return [e["size"] if "size" in e else values[e["symbol"] or id(e)]
            for _, e in sorted(check.dims.items())]


def _describe_contract(report, container):
    """The shape contract in the report (``shape_contract``), or a note of
    what stands in for it; the contract, or None."""
    contract = shape_contract_of(container.library, container.num_inputs)
    if contract is None:
        report["shape_contract"] = None
        report["notes"].append(
            "no wrapper source beside the .so: each input is checked alone by the "
            "model's own check (dtype, static sizes, bounds); dims shared between "
            "inputs are NOT checked against each other")
        return None
    labels = input_labels(container.input_names, container.call_spec[0])
    report["shape_contract"] = contract.to_json(labels)
    return contract


def _trial_outputs(report, container, checks, contract=None):
    """Output (dtype, device, dims) from two runs on zero-filled inputs of
    different sizes; None when the model cannot be run so."""
    if contract is not None and len(contract.covered) == container.num_inputs:
        return _trial_runs(report, container, checks, [
            (values, contract.trial_sizes(values))
            for values in (contract.trial_values(1), contract.trial_values(2))])
    if any(e.get("candidates") for c in checks for e in c.dims.values()):
        report["notes"].append("output shapes unknown: an input's dynamic dim may match "
                               "several others, so no trial inputs are sure to fit")
        return None
    if any(c.dtype is None for c in checks):
        report["notes"].append("output shapes unknown: an input's dtype is not in "
                               "its check")
        return None
    return _trial_runs(report, container, checks, [
        (values, [_trial_shape(check, values) for check in checks])
        for values in _trial_values(checks)])


def _trial_runs(report, container, checks, picks):
    """Two runs on zero-filled inputs: ``picks`` holds (symbol values, input
    shapes) for each."""
    runs = []
    try:
        for values, shapes in picks:
            inputs = [torch.zeros(shape, dtype=check.dtype, device=container.device)
                      for check, shape in zip(checks, shapes)]
            runs.append((values, container.run(inputs)))
    except Exception as e:  # noqa: BLE001 - the report says why
        report["notes"].append(f"output shapes unknown: a trial run on zero-filled "
                               f"inputs failed ({type(e).__name__}: {e})")
        return None
    report["notes"].append("output dtypes and shapes: from two trial runs on "
                           "zero-filled inputs")
    found = []
    for i, first in enumerate(runs[0][1]):
        second = runs[1][1][i]
        if first is None:
            found.append(None)
            continue
        dims = []
        for d, size in enumerate(first.shape):
            other = second.shape[d] if d < second.dim() else None
            if other == size:
                dims.append(size)
                continue
            symbols = [k for k in runs[0][0] if isinstance(k, str)
                       and runs[0][0][k] == size and runs[1][0][k] == other]
            dims.append({"symbol": symbols[0] if len(symbols) == 1 else None})
        found.append((_dtype_name(first.dtype), str(first.device), dims))
    return found


def _outputs(report, container, tree, found):
    leaves = _spec_tree.leaves(_spec_tree.output_roots(tree))
    names = _leaf_names(leaves, container.num_outputs)
    outputs = []
    for i in range(container.num_outputs):
        entry = {"index": i, "name": names[i] or f"output {i}", "dtype": None,
                 "shape": None, "device": str(container.device)}
        if found is not None and found[i] is not None:
            entry["dtype"], entry["device"], entry["shape"] = found[i]
        outputs.append(entry)
    return outputs


def _tree_json(roots):
    return [{"key": name, **node.to_json()} for name, node in roots]
