"""The text form of an ``inspect`` report (``aoti_cy.cli.inspect``)."""

__all__ = ["format_report"]


def format_report(report, constants=False):
    """The report as text; ``constants`` adds every model's constants table."""
    lines = [f"package   {report['package']}  ({report['kind']}; torch {report['torch']})"]
    if report["models_in_package"]:
        lines.append(f"models    {', '.join(report['models_in_package'])}")
    for model in report["models"]:
        lines.append("")
        lines += _model(model, constants)
    return "\n".join(lines)


def _model(m, constants):
    metadata = m.get("metadata") or {}
    platform = " ".join(metadata[k] for k in ("AOTI_PLATFORM", "AOTI_MACHINE", "AOTI_CPU_ISA")
                        if metadata.get(k))
    header = f"== model {m['name']!r}"
    if m.get("device"):
        header += f"  on {m['device']}" + (f"  (compiled for {platform})" if platform else "")
    lines = [header]
    if m["runs_as_is"]:
        lines.append("runs as is: yes")
    else:
        lines.append("runs as is: no, it needs")
        lines += [f"  - {need}" for need in m["needs"]]
    if m.get("inputs"):
        lines.append("inputs")
        lines += _tree(m.get("input_tree") or [], m["inputs"])
        symbols = _symbols(m["inputs"])
        if symbols:
            lines.append("  dynamic dims: " + ", ".join(symbols))
    lines += _contract(m.get("shape_contract"))
    if m.get("outputs"):
        tree = m.get("output_tree")
        kind = tree.get("type") if tree else None
        lines.append("outputs" + (f"   {kind}" if kind else ""))
        roots = ([{"key": "output", **tree}] if tree and "leaf" in tree
                 else (tree or {}).get("children", []))
        lines += _tree(roots, m["outputs"])
    if "weights" in m:
        lines += _weights(m["weights"], constants)
    if m.get("fallback_ops"):
        lines.append("fallback ops (run by the proxy executor)")
        for op in m["fallback_ops"]:
            kind = "custom op" if op["custom_op"] else "aten op without a C shim"
            state = "registered" if op["registered"] else "NOT registered in this process"
            lines.append(f"  {op['op']}  ({kind}; {state})")
    if m.get("files"):
        lines.append("files in the package")
        width = max(len(f["path"]) for f in m["files"])
        for f in m["files"]:
            lines.append(f"  {f['path']:<{width}}  {_size(f['bytes']):>9}  {f['role']}")
    if m.get("stack"):
        lines.append(f"stack     {_stack(m['stack'])}")
    if m.get("exports"):
        absent = [name for name, present in m["exports"].items() if not present]
        lines.append(f"optional ABI entry points: {len(m['exports']) - len(absent)} of "
                     f"{len(m['exports'])}" + (f" (absent: {', '.join(absent)})" if absent else ""))
    for note in m.get("notes", []):
        lines.append(f"note: {note}")
    return lines


def _contract(contract):
    """The shape contract: each input's dims by symbol, the symbols' ranges
    and where their values come from, and what is left to the model."""
    if not contract:
        return []
    lines = ["shape contract (checked on every call)"]
    for entry in contract["inputs"]:
        if entry is not None:
            lines.append(f"  {entry['name']} [{', '.join(s or '?' for s in entry['sizes'])}]")
    for symbol in contract["symbols"]:
        high = "inf" if symbol["max"] is None else symbol["max"]
        where = (f" (from {symbol['from']['input']} dim {symbol['from']['dim']})"
                 if symbol["from"] else "")
        lines.append(f"  {symbol['name']} in [{symbol['min']}, {high}]{where}")
    for entry in contract["unchecked"]:
        lines.append(f"  not checked: {entry['input']}: {entry['reason']}")
    return lines


def _stack(stack):
    if not stack["executable_in_file"]:
        return f"non-executable ({stack['in_file']})"
    header = "no PT_GNU_STACK header" if stack["in_file"] == "none" else stack["in_file"]
    loaded = {False: "loaded with a non-executable stack",
              True: "loaded with an executable stack",
              None: "not loaded"}[stack["loaded_executable"]]
    return f"executable ({header}) in the file; {loaded}"


def _shape(shape):
    if shape is None:
        return "?"
    parts = []
    for dim in shape:
        if isinstance(dim, int):
            parts.append(str(dim))
        else:
            parts.append(dim.get("symbol") or "?")
    return "[" + ", ".join(parts) + "]"


def _symbols(inputs):
    seen = {}
    for tensor in inputs:
        for dim in tensor["shape"] or ():
            if isinstance(dim, dict):
                key = dim["symbol"] or "?"
                high = "inf" if dim["max"] is None else dim["max"]
                seen.setdefault(key, f"{key} in {dim['min']}..{high}")
    return list(seen.values())


def _leaf_text(tensor):
    return f"{tensor['dtype'] or '?':<8}  {_shape(tensor['shape'])}  {tensor['device']}"


def _tree(roots, tensors):
    """Rows of a spec tree (entries as in the report's *_tree) with each
    leaf's tensor; the leaf details in one aligned column. Without a tree,
    one row per tensor by name."""
    rows = []

    def walk(entry, prefix, last, top):
        branch = "" if top else ("└─ " if last else "├─ ")
        label = prefix + branch + _key(entry["key"])
        if "leaf" in entry:
            index = entry["leaf"]
            rows.append((label, _leaf_text(tensors[index]) if index < len(tensors) else "?"))
            return
        rows.append((label, entry["type"]))
        children = entry["children"]
        inner = prefix + ("" if top else ("   " if last else "│  "))
        for i, child in enumerate(children):
            walk(child, inner, i == len(children) - 1, False)

    if roots:
        for entry in roots:
            walk(entry, "", True, True)
    else:
        rows = [(t["name"], _leaf_text(t)) for t in tensors]
    width = max(len(label) for label, _ in rows)
    return [f"  {label:<{width}}  {text}" for label, text in rows]


def _key(key):
    return f"[{key}]" if isinstance(key, int) else str(key)


def _weights(w, constants):
    lines = []
    if "count" in w:
        folded = f", {w['folded']} folded at load" if w["folded"] else ""
        noun = "constant" if w["count"] == 1 else "constants"
        lines.append(f"weights   {w['count']} {noun}, {_size(w['bytes'])}{folded}; "
                     f"stored {w['stored']}")
        if w["missing"]:
            lines.append(f"  missing: {len(w['missing'])} constants have no value")
    else:
        lines.append(f"weights   stored {w['stored']}")
    for f in w.get("files", []):
        lines.append(f"  {f}")
    if constants and w.get("constants"):
        missing = set(w["missing"])
        rows = [("fqn", "name", "dtype", "bytes", "")] + [
            (c["fqn"], c["name"], c["dtype"], str(c["bytes"]),
             "folded" if c["folded"] else "missing" if c["fqn"] in missing else "")
            for c in w["constants"]]
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines += ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                  for row in rows]
    return lines


def _size(count):
    if count is None:
        return "missing"
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count} B" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return ""
