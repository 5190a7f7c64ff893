"""The proxy executor: models whose graph calls ops through it (Python custom
ops, aten ops without a C shim) run, match eager and torch's own loader, also
from several threads; a bad extern-node file is a PackageError at load, and
a node that does not fit its call is a clear AOTIError at run time.

Fuzzing of the extern-node decoder is at the end (short by default; set
AOTI_CY_FUZZ_EXAMPLES for a long run, as in test_fuzz.py).
"""

import copy
import json
import os
import subprocess
import sys
import threading
import zipfile

import pytest
import torch

import aoti_cy
from aoti_cy._extern_nodes import json_path_for, read_nodes
from aoti_cy._proxy_executor import ProxyExecutor, executor_for
from aoti_cy.testing import EXAMPLES as TESTING_EXAMPLES
from conftest import assert_outputs_match, extract_library, run_in_threads

import proxy_models
from proxy_models import EXAMPLES

TORCH_VERSION = tuple(int(p) for p in torch.__version__.split(".")[:2])
# The model's own words when a fallback op's call fails; models without
# AOTInductorGetLastError (torch 2.11) printed them to stderr instead.
MODEL_SAYS_A_CALL_FAILED = "proxy_executor_call_function|printed its reason to stderr"

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings, strategies as st  # noqa: E402

FUZZ = settings(
    max_examples=int(os.environ.get("AOTI_CY_FUZZ_EXAMPLES", "60")),
    deadline=None, database=None, derandomize="AOTI_CY_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture])


def package(name):
    return EXAMPLES[name].package("cpu")


def eager(name, inputs):
    with torch.no_grad():
        out = EXAMPLES[name].eager()(*inputs)
    return out if isinstance(out, tuple) else (out,)


def package_nodes(path):
    """The extern nodes stored in a .pt2, as JSON."""
    with zipfile.ZipFile(path) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".wrapper.json")]
        return json.loads(archive.read(name))["nodes"]


# ---- parity ---------------------------------------------------------------------

def test_custom_ops_match_eager_and_torch():
    path = package("custom_ops")
    assert [n["node"]["target"] for n in package_nodes(path)] == [
        "aoti_cy_test::mix", "aoti_cy_test::pick", "aoti_cy_test::accumulate_"]
    inputs = EXAMPLES["custom_ops"].inputs()
    want = eager("custom_ops", inputs)
    with aoti_cy.load(path) as model:
        assert_outputs_match(model.run(inputs), want)
        assert_outputs_match(model(*inputs), want)
        for seed in range(2, 6):   # the stack is rebuilt on every call
            other = EXAMPLES["custom_ops"].inputs(seed=seed)
            assert_outputs_match(model.run(other), eager("custom_ops", other))
    if TORCH_VERSION >= (2, 13):   # torch 2.11's own loader fails on this model
        assert_outputs_match(torch._inductor.aoti_load_package(path)(*inputs), want)


def test_without_an_executor_the_model_fails(tmp_path):
    """What the executor is for: the same library run with a NULL executor."""
    library = extract_library(package("custom_ops"), tmp_path)
    with aoti_cy.ModelContainer(library) as bare:
        with pytest.raises(aoti_cy.AOTIError, match=MODEL_SAYS_A_CALL_FAILED):
            bare.run(EXAMPLES["custom_ops"].inputs())
    with aoti_cy.ModelContainer(library, proxy_executor=executor_for(library, "cpu")) as model:
        inputs = EXAMPLES["custom_ops"].inputs()
        assert_outputs_match(model.run(inputs), eager("custom_ops", inputs))


def test_aten_fallback_unique():
    """aten._unique2 has no C shim in torch 2.13: a data-dependent output size
    and bool arguments given as constants."""
    path = package("unique")
    (node,) = package_nodes(path)
    assert node["node"]["target"] == "aten::_unique2"
    torch_model = torch._inductor.aoti_load_package(path)
    with aoti_cy.load(path) as model:
        for scale in (3.0, 0.5, 20.0):   # different numbers of unique values
            inputs = [EXAMPLES["unique"].inputs()[0] * scale / 3]
            want = eager("unique", inputs)
            assert_outputs_match(model.run(inputs), want)
            assert_outputs_match(model(*inputs), want)
            assert_outputs_match(torch_model(*inputs), want)


def test_models_without_extern_nodes_get_no_executor(tmp_path):
    """Their runs pass a NULL executor, as before: nothing added to the run path."""
    library = extract_library(TESTING_EXAMPLES["add_one"].package("cpu"), tmp_path)
    assert not os.path.exists(json_path_for(library))
    assert executor_for(library, "cpu") is None


def test_executor_object():
    with aoti_cy.load(package("custom_ops")) as model:
        executor = executor_for(model.library_path, "cpu")
        assert executor.targets == ("aoti_cy_test::mix", "aoti_cy_test::pick",
                                    "aoti_cy_test::accumulate_")
        assert isinstance(executor.handle, int) and executor.handle != 0
        assert executor.take_error() is None
        assert "3 nodes" in repr(executor)


# ---- failures at run time --------------------------------------------------------

def test_op_failure_names_the_op():
    inputs = EXAMPLES["failing"].inputs()
    with aoti_cy.load(package("failing")) as model:
        with pytest.raises(aoti_cy.AOTIError,
                           match=r"(?s)aoti_cy_test::fail_if_negative.*got a negative input"):
            model.run([-inputs[0]])
        assert_outputs_match(model.run(inputs), eager("failing", inputs))   # still usable
        with pytest.raises(aoti_cy.AOTIError, match="fail_if_negative"):
            model(-inputs[0])


def test_op_failure_on_another_thread_is_reported_there():
    inputs = EXAMPLES["failing"].inputs()
    errors = []
    with aoti_cy.load(package("failing"), num_models=2) as model:
        def fail():
            try:
                model.run([-inputs[0]])
            except aoti_cy.AOTIError as e:
                errors.append(str(e))
        thread = threading.Thread(target=fail)
        thread.start()
        thread.join(timeout=60)
        assert not thread.is_alive()
        assert len(errors) == 1 and "fail_if_negative" in errors[0]
        assert_outputs_match(model.run(inputs), eager("failing", inputs))


# ---- threads ---------------------------------------------------------------------

def test_two_threads_inside_a_python_op_at_once(monkeypatch):
    """run releases the GIL, the executor holds none, and the Python op takes
    it itself: with num_models=2 two runs meet inside the op."""
    monkeypatch.setattr(proxy_models, "BARRIER", threading.Barrier(2))
    results = {}
    with aoti_cy.load(package("rendezvous"), num_models=2) as model:
        def work(i):
            x = torch.full((5, 7), float(i))
            results[i] = (x, model.run([x])[0])
        errors = run_in_threads(work, 2, timeout=60)
    assert not errors, errors
    for x, y in results.values():
        torch.testing.assert_close(y, (x + 1) * 2 - 1)


def test_threads_share_one_executor():
    runs = [EXAMPLES["custom_ops"].inputs(seed=s) for s in range(6)]
    wants = [eager("custom_ops", x) for x in runs]
    with aoti_cy.load(package("custom_ops"), num_models=2) as model:
        def work(offset):
            for i in range(40):
                k = (i + offset) % len(runs)
                assert_outputs_match(model.run(runs[k]), wants[k])
        errors = run_in_threads(work, 2, timeout=120)
    assert not errors, errors


# ---- bad extern-node files -------------------------------------------------------

@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """custom_ops's package extracted once; restore() puts its .json back."""
    root = tmp_path_factory.mktemp("proxy")
    library = extract_library(package("custom_ops"), root)
    path = json_path_for(library)
    with open(path, "rb") as f:
        original = f.read()

    class Extracted:
        directory = str(root)
        json_path = path
        document = json.loads(original)

        def write(self, data):
            with open(path, "wb") as f:
                f.write(data if isinstance(data, bytes) else json.dumps(data).encode())

        def restore(self):
            self.write(original)
    yield Extracted()


def _edit(document, node, change):
    document = copy.deepcopy(document)
    change(document["nodes"][node]["node"] if node is not None else document)
    return document


def _set_input(name, value):
    def change(node):
        for named in node["inputs"]:
            if named["name"] == name:
                named["arg"] = value
    return change


def _set(key, value):
    def change(target):
        target[key] = value
    return change


def _drop_input(name):
    def change(node):
        node["inputs"] = [n for n in node["inputs"] if n["name"] != name]
    return change


def _rename_input(old, new):
    def change(node):
        for named in node["inputs"]:
            if named["name"] == old:
                named["name"] = new
    return change


BAD_NODES = {
    "unknown_op": (0, _set("target", "aoti_cy_test::no_such_op"),
                   r"aoti_cy_test::no_such_op, which is not registered in this process: "
                   r".*import the Python module"),
    "unknown_overload": (0, _set("target", "aoti_cy_test::mix.nope"), r"not registered"),
    "unregistered_namespace": (
        0, lambda n: n.update(target="elsewhere::mix", metadata={}),
        r"elsewhere::mix, which is not registered .* import the Python module that "
        r"registers the 'elsewhere' ops"),
    "missing_aten_op": (0, _set("target", "aten::no_such_op"), r"torch .* has no such op"),
    "tensor_as_int": (0, _set_input("x", {"as_int": 3}),
                      r"argument 'x' \(Tensor\) is serialized as as_int, expected as_tensor"),
    "int_as_float": (0, _set_input("k", {"as_float": 2.0}), r"argument 'k' .* as_float"),
    "string_as_bool": (0, _set_input("mode", {"as_bool": True}), r"argument 'mode'"),
    "list_as_tensor": (0, _set_input("others", {"as_tensor": {"name": "a"}}),
                       r"argument 'others'"),
    "optional_list_as_int": (1, _set_input("items", {"as_int": 1}), r"argument 'items'"),
    "unknown_argument": (0, _rename_input("alpha", "gamma"), r"no argument named 'gamma'"),
    "missing_argument": (0, _drop_input("x"), r"argument 'x' is missing"),
    "duplicate_argument": (0, lambda n: n["inputs"].append(n["inputs"][0]),
                           r"argument 'x' is given twice"),
    "too_few_outputs": (0, lambda n: n["outputs"].pop(),
                        r"returns 2 values but the node describes 1 outputs"),
    "output_kind": (0, lambda n: n["outputs"].__setitem__(0, {"as_tensors": []}),
                    r"output 0 \(Tensor\) is serialized as as_tensors"),
    "outputs_for_none": (2, _set("outputs", [{"as_none": True}]), r"returns 0 values"),
    "bad_scalar_type": (0, _set_input("dtype", {"as_scalar_type": 99}),
                        r"unknown serialized scalar type 99"),
    "bad_device": (1, _set_input("device", {"as_device": {"type": "warp", "index": None}}),
                   r"aoti_cy_test::pick"),
    "torchbind_object": (0, _set_input("x", {"as_custom_obj": {"name": "o", "class_fqn": "c"}}),
                         r"torchbind"),
    "call_torchbind": (0, _set("target", "call_torchbind"), r"call_torchbind .* not supported"),
    "unsupported_kind": (0, _set_input("x", {"as_graph": {}}), r"'as_graph'.* not support"),
    "huge_int": (0, _set_input("k", {"as_int": 2 ** 70}), r"not a 64-bit int"),
    "bool_as_int": (0, _set_input("k", {"as_int": True}), r"not a 64-bit int"),
    "two_keys": (0, _set_input("k", {"as_int": 1, "as_float": 1.0}), r"one key"),
    "target_not_string": (0, _set("target", 42), r"target is not a string"),
    "target_without_namespace": (0, _set("target", "mix"), r"namespace::op"),
    "inputs_not_list": (0, _set("inputs", {}), r"inputs and outputs must be lists"),
    "input_without_name": (0, lambda n: n["inputs"][0].pop("name"), r"malformed"),
    "node_not_object": (None, lambda d: d["nodes"].__setitem__(0, 3), r"extern node 0 .* malformed"),
    "nodes_not_list": (None, _set("nodes", {}), r'"nodes" list'),
    "no_nodes": (None, lambda d: d.pop("nodes"), r'"nodes" list'),
}


@pytest.mark.parametrize("case", sorted(BAD_NODES))
def test_bad_nodes_are_package_errors(extracted, case):
    node, change, message = BAD_NODES[case]
    extracted.write(_edit(extracted.document, node, change))
    try:
        with pytest.raises(aoti_cy.PackageError, match=message):
            aoti_cy.load(extracted.directory)
    finally:
        extracted.restore()
    with aoti_cy.load(extracted.directory) as model:   # the untouched file loads
        assert model.num_outputs == 3


@pytest.mark.parametrize("text", [
    b"", b"this is not json", b"{\"nodes\": [", b"\xff\xfe\x00", b"[" * 100_000, b"null",
    b"[]", b"{\"nodes\": [{\"node\": null}]}"])
def test_unreadable_json_is_a_package_error(extracted, text):
    extracted.write(text)
    try:
        with pytest.raises(aoti_cy.PackageError, match=r"extern node|not valid JSON"):
            aoti_cy.load(extracted.directory)
    finally:
        extracted.restore()


def test_truncated_json_is_a_package_error(extracted):
    with open(extracted.json_path, "rb") as f:
        text = f.read()
    try:
        for cut in range(0, len(text) - 1, max(1, len(text) // 40)):
            extracted.write(text[:cut])
            with pytest.raises(aoti_cy.PackageError):
                aoti_cy.load(extracted.directory)
    finally:
        extracted.restore()


RUN_MISMATCHES = {
    # Each still fits the op's schema, so only the call can tell.
    "one_tensor_more": (0, _set_input("others", {"as_tensors": [{"name": "a"}] * 3}),
                        r"aoti_cy_test::mix\) failed: the model passed 3 ints and 6 tensors, "
                        r"the node's serialized arguments take 3 and 7"),
    "one_int_more": (0, _set_input("sizes", {"as_ints": [6, 4, 1]}),
                     r"passed 3 ints and 6 tensors, the node's serialized arguments take 4 and 6"),
    "a_node_fewer": (None, lambda d: d["nodes"].pop(),
                     r"extern node 2 failed: no such node: the package's .json describes 2"),
}


@pytest.mark.parametrize("case", sorted(RUN_MISMATCHES))
def test_call_that_does_not_fit_its_node_is_an_error(extracted, case):
    node, change, message = RUN_MISMATCHES[case]
    extracted.write(_edit(extracted.document, node, change))
    try:
        with aoti_cy.load(extracted.directory) as model:
            inputs = EXAMPLES["custom_ops"].inputs()
            for _ in range(2):
                with pytest.raises(aoti_cy.AOTIError, match=message):
                    model.run(inputs)
    finally:
        extracted.restore()


def test_empty_node_list_means_no_executor(extracted):
    extracted.write({"nodes": []})
    try:
        assert executor_for(os.path.splitext(extracted.json_path)[0] + ".so", "cpu") is None
        with aoti_cy.load(extracted.directory) as model:
            with pytest.raises(aoti_cy.AOTIError, match=MODEL_SAYS_A_CALL_FAILED):
                model.run(EXAMPLES["custom_ops"].inputs())
    finally:
        extracted.restore()


def test_op_module_not_imported():
    """The usual mistake: loading a package whose custom op's module this
    process never imported."""
    code = "import sys, aoti_cy; aoti_cy.load(sys.argv[1])"
    result = subprocess.run([sys.executable, "-c", code, package("custom_ops")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "aoti_cy.errors.PackageError" in result.stderr
    assert "calls aoti_cy_test::mix, which is not registered in this process" in result.stderr
    # torch 2.13 marks custom_op nodes, so the message can say so; 2.11 does not.
    assert "import the Python module" in result.stderr


# ---- fuzzing the decoder -----------------------------------------------------------

KNOWN_KEYS = ["nodes", "node", "target", "inputs", "outputs", "name", "arg", "metadata",
              "as_none", "as_tensor", "as_tensors", "as_optional_tensors",
              "as_optional_tensor", "as_int", "as_sym_int", "as_ints", "as_sym_ints",
              "as_float", "as_floats", "as_bool", "as_bools", "as_string", "as_strings",
              "as_scalar_type", "as_memory_format", "as_layout", "as_device", "as_name",
              "as_custom_obj", "type", "index"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 65, 2 ** 65)
    | st.floats(allow_nan=True) | st.text(max_size=12)
    | st.sampled_from(["aten::_unique2", "aoti_cy_test::mix", "x", "cpu", "NaN"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=6), children, max_size=3),
    max_leaves=12)

mutation = st.one_of(
    st.tuples(st.just("replace"), st.integers(0, 10_000), json_values),
    st.tuples(st.just("delete"), st.integers(0, 10_000)),
    st.tuples(st.just("rekey"), st.integers(0, 10_000), st.sampled_from(KNOWN_KEYS)),
    st.tuples(st.just("duplicate"), st.integers(0, 10_000)),
)


def _paths(value, prefix=()):
    """Every (container, key) in a JSON document, depth first."""
    found = []
    items = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    for key, child in items:
        found.append((value, key))
        found.extend(_paths(child))
    return found


def _mutate(document, mutations):
    document = copy.deepcopy(document)
    for op, index, *args in mutations:
        paths = _paths(document)
        if not paths:
            break
        container, key = paths[index % len(paths)]
        if op == "replace":
            container[key] = args[0]
        elif op == "delete":
            del container[key]
        elif op == "rekey" and isinstance(container, dict):
            container[args[0]] = container.pop(key)
        elif op == "duplicate" and isinstance(container, list):
            container.append(copy.deepcopy(container[key]))
    return document


@FUZZ
@given(mutations=st.lists(mutation, min_size=1, max_size=4),
       cut=st.none() | st.floats(0, 1))
@example(mutations=[("rekey", 8, "as_float")], cut=None)
@example(mutations=[("replace", 3, {"as_optional_tensors": [None]})], cut=None)
@example(mutations=[("replace", 0, [])], cut=None)
@example(mutations=[("duplicate", 2)], cut=None)
@example(mutations=[("delete", 5)], cut=0.7)
def test_fuzz_extern_nodes(extracted, mutations, cut):
    """A mutated .json loads (when it still fits every op's schema) or is a
    PackageError; never another exception, never a crash. Mutated files that
    load are not run: the .json is part of the compiled model, and a changed
    constant (a dtype, a size) makes the model misread its own buffers, as a
    patched .so would."""
    text = json.dumps(_mutate(extracted.document, mutations)).encode()
    if cut is not None:
        text = text[:int(len(text) * cut)]
    extracted.write(text)
    try:
        try:
            model = aoti_cy.load(extracted.directory)
        except aoti_cy.PackageError as e:
            assert str(e)
            return
        model.close()
        # What loaded was decoded and matched to real schemas.
        nodes = read_nodes(extracted.json_path)
        assert all("::" in n.op_name for n in nodes)
    finally:
        extracted.restore()


def test_fuzz_examples_cover_load_and_refusal(extracted):
    """The strategy reaches both outcomes (a fuzz run that only ever hits
    PackageError tests little)."""
    loaded = _mutate(extracted.document, [("rekey", 0, "nodes")])
    extracted.write(loaded)
    try:
        aoti_cy.load(extracted.directory).close()
        extracted.write(_mutate(extracted.document, [("replace", 0, 1)]))
        with pytest.raises(aoti_cy.PackageError):
            aoti_cy.load(extracted.directory)
    finally:
        extracted.restore()


def test_executor_reads_nodes_directly(extracted):
    nodes = read_nodes(extracted.json_path)
    executor = ProxyExecutor(nodes, "cpu", extracted.json_path)
    assert executor.targets == tuple(n.target for n in nodes)
    with pytest.raises(ValueError, match="invalid device"):
        ProxyExecutor(nodes, "not-a-device")


def test_single_instance_model_refuses_fallback_ops():
    # AOTInductorModelRun takes no proxy executor: say so at creation.
    with pytest.raises(aoti_cy.PackageError, match=r"proxy executor.*aoti_cy.load\(\)"):
        aoti_cy.Model(package("custom_ops"))
