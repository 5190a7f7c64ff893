"""aoti_cy._extern_nodes: the extern-node JSON torch writes beside a model
that calls ops through the proxy executor, as torch 2.13 writes it (custom
ops marked in the metadata) and as torch 2.11 does (no such mark), and every
way it can be malformed."""

import copy
import json
import math

import pytest

from aoti_cy._extern_nodes import Arg, json_path_for, read_nodes
from aoti_cy.errors import PackageError


def node(target, inputs, outputs, metadata=None):
    """One entry of the "nodes" list; ``metadata`` None leaves the key out."""
    body = {"target": target,
            "inputs": [{"name": name, "arg": arg, "kind": 1} for name, arg in inputs],
            "outputs": outputs}
    if metadata is not None:
        body.update(metadata=metadata, is_hop_single_tensor_return=None, name=None)
    return {"name": "buf2", "node": body}


MIX_INPUTS = [
    ("x", {"as_tensor": {"name": "buf0"}}),
    ("others", {"as_tensors": [{"name": "arg2_1"}, {"name": "buf1"}]}),
    ("gate", {"as_none": True}),
    ("alpha", {"as_float": 0.75}),
    ("k", {"as_int": 2}),
    ("sizes", {"as_ints": [6, 4]}),
    ("flag", {"as_bool": True}),
    ("mode", {"as_string": "tanh"}),
    ("dtype", {"as_scalar_type": 8}),
]
PICK_INPUTS = [
    ("items", {"as_optional_tensors": [{"as_tensor": {"name": "buf3"}}, {"as_none": True},
                                       {"as_tensor": {"name": "buf5"}}]}),
    ("device", {"as_device": {"type": "cpu", "index": None}}),
    ("weights", {"as_floats": [2.0, -0.5]}),
    ("mask", {"as_bools": [True, False]}),
]


def document_torch_2_13():
    """As torch 2.13 writes it: custom ops carry torch_library_custom_op."""
    custom = {"torch_library_custom_op": "1"}
    return {"nodes": [
        node("aoti_cy_test::mix", MIX_INPUTS,
             [{"as_tensor": {"name": "buf3"}}, {"as_tensor": {"name": "buf4"}}], custom),
        node("aoti_cy_test::pick", PICK_INPUTS,
             [{"as_tensors": [{"name": "buf7"}, {"name": "buf8"}]}], custom),
        node("aten::_unique2.default", [("self", {"as_tensor": {"name": "buf9"}}),
                                        ("sorted", {"as_bool": True})],
             [{"as_tensor": {"name": "buf10"}}], {}),
    ]}


def document_torch_2_11():
    """As torch 2.11 writes it: no metadata, so no custom-op mark."""
    return {"nodes": [
        node("aoti_cy_test::mix", MIX_INPUTS,
             [{"as_tensor": {"name": "buf3"}}, {"as_tensor": {"name": "buf4"}}]),
        node("aoti_cy_test::pick", PICK_INPUTS,
             [{"as_tensors": [{"name": "buf7"}, {"name": "buf8"}]}]),
    ]}


@pytest.fixture
def write(tmp_path):
    def write(document, raw=None):
        path = tmp_path / "model.wrapper.json"
        path.write_bytes(raw if raw is not None else json.dumps(document).encode())
        return str(path)
    return write


def test_the_json_lies_beside_the_library():
    assert json_path_for("/pkg/data/c1.wrapper.so") == "/pkg/data/c1.wrapper.json"


def test_torch_2_13_nodes(write):
    mix, pick, unique = read_nodes(write(document_torch_2_13()))
    assert (mix.target, mix.op_name, mix.overload, mix.custom_op) == (
        "aoti_cy_test::mix", "aoti_cy_test::mix", "", True)
    assert (unique.op_name, unique.overload, unique.custom_op) == (
        "aten::_unique2", "default", False)
    assert mix.inputs == (
        Arg("x", "as_tensor", 0, (), (), ()),
        Arg("others", "as_tensors", 2, (), (), ()),
        Arg("gate", "as_none", 0, (), (), ()),
        Arg("alpha", "as_float", 0, (), (0.75,), ()),
        Arg("k", "as_int", 0, (2,), (), ()),
        Arg("sizes", "as_ints", 2, (6, 4), (), ()),
        Arg("flag", "as_bool", 0, (1,), (), ()),
        Arg("mode", "as_string", 0, (), (), ("tanh",)),
        Arg("dtype", "as_scalar_type", 0, (8,), (), ()),
    )
    assert mix.outputs == (Arg("", "as_tensor", 0, (), (), ()),) * 2
    assert pick.inputs == (
        Arg("items", "as_optional_tensors", 2, (1, 0, 1), (), ()),
        Arg("device", "as_device", 0, (-1,), (), ("cpu",)),
        Arg("weights", "as_floats", 2, (), (2.0, -0.5), ()),
        Arg("mask", "as_bools", 2, (1, 0), (), ()),
    )
    assert pick.outputs == (Arg("", "as_tensors", 2, (), (), ()),)


def test_torch_2_11_nodes_read_the_same_without_the_custom_op_mark(write):
    from torch._library.custom_ops import OPDEFS
    old = read_nodes(write(document_torch_2_11()))
    new = read_nodes(write(document_torch_2_13()))[:2]
    # Without the mark, a node is a custom op exactly when an op of its name
    # is defined in this process (tests that import the custom ops define them).
    assert [n.custom_op for n in old] == [n.op_name in OPDEFS for n in old]
    assert [n._replace(custom_op=True) for n in old] == list(new)


def test_symbolic_ints_special_floats_and_devices(write):
    document = {"nodes": [node("ns::op.out", [
        ("n", {"as_sym_int": {"as_name": "s0"}}),
        ("m", {"as_sym_int": {"as_int": 5}}),
        ("shape", {"as_sym_ints": [{"as_int": 2}, {"as_name": "s1"}]}),
        ("lo", {"as_float": "-Infinity"}),
        ("vals", {"as_floats": ["NaN", "Infinity", 3]}),
        ("dev", {"as_device": {"type": "cuda", "index": 1}}),
        ("opt", {"as_optional_tensor": {"as_none": True}}),
        ("layout", {"as_layout": 0}),
        ("fmt", {"as_memory_format": 1}),
        ("names", {"as_strings": ["a", "b"]}),
    ], [])]}
    (op,) = read_nodes(write(document))
    args = {a.name: a for a in op.inputs}
    assert op.overload == "out" and op.outputs == ()
    assert args["n"].ints == (0,) and args["m"].ints == (5,)
    assert args["shape"].ints == (2, 0) and args["shape"].count == 2
    assert args["lo"].floats == (-math.inf,)
    nan, inf, three = args["vals"].floats
    assert math.isnan(nan) and inf == math.inf and three == 3.0 and type(three) is float
    assert args["dev"].strings == ("cuda",) and args["dev"].ints == (1,)
    assert args["opt"].count == 0 and args["opt"].ints == (0,)
    assert args["layout"].ints == (0,) and args["fmt"].ints == (1,)
    assert args["names"].strings == ("a", "b") and args["names"].count == 2


def test_an_empty_node_list_is_no_node(write):
    assert read_nodes(write({"nodes": []})) == ()


def test_a_missing_file_is_a_package_error(tmp_path):
    with pytest.raises(PackageError, match="cannot read the model's extern nodes"):
        read_nodes(str(tmp_path / "absent.json"))


@pytest.mark.parametrize("raw, message", [
    (b"{not json", "are not valid JSON"),
    (b"\xff\xfe", "are not valid JSON"),
    (b"[]", 'malformed: expected an object with a "nodes" list'),
    (b'{"nodes": {}}', 'malformed: expected an object with a "nodes" list'),
    (b"[" * 100000, "are not valid JSON"),
])
def test_a_file_that_is_not_a_node_list(write, raw, message):
    with pytest.raises(PackageError, match=message):
        read_nodes(write(None, raw=raw))


def broken(change):
    """The 2.13 document with ``change(nodes)`` applied."""
    document = copy.deepcopy(document_torch_2_13())
    change(document["nodes"])
    return document


def set_arg(index, name, value):
    def change(nodes):
        for entry in nodes[index]["node"]["inputs"]:
            if entry["name"] == name:
                entry["arg"] = value
    return change


@pytest.mark.parametrize("change, message", [
    (lambda n: n.__setitem__(1, "text"), r'extern node 1 of .* is malformed: expected \{"node"'),
    (lambda n: n[0]["node"].__setitem__("target", 7), "its target is not a string"),
    (lambda n: n[2]["node"].__setitem__("target", "unique2"),
     "extern node 2 of .* is malformed: target 'unique2' is not of the form "
     "namespace::op.overload"),
    (lambda n: n[2]["node"].__setitem__("target", "aten::a.b.c"), "not of the form"),
    (lambda n: n[2]["node"].__setitem__("target", "::op"), "not of the form"),
    (lambda n: n[0]["node"].__setitem__("inputs", {}), "its inputs and outputs must be lists"),
    (lambda n: n[0]["node"]["inputs"].append({"arg": {"as_int": 1}}),
     r'an input is not \{"name": ..., "arg": ...\}'),
    (set_arg(0, "k", {"as_int": 1 << 63}), r"argument 'k': 9223372036854775808 is not a "
                                           r"64-bit int"),
    (set_arg(0, "k", {"as_int": True}), "argument 'k': True is not a 64-bit int"),
    (set_arg(0, "k", {"as_int": 1, "as_float": 2.0}), "argument 'k' is not an object with "
                                                      "one key"),
    (set_arg(0, "alpha", {"as_float": "1.5"}), "argument 'alpha': '1.5' is not a number"),
    (set_arg(0, "flag", {"as_bool": 1}), "argument 'flag': 1 is not a bool"),
    (set_arg(0, "mode", {"as_string": "a\x00b"}), "is not a string"),
    (set_arg(0, "sizes", {"as_ints": 6}), "argument 'sizes': expected a list"),
    (set_arg(0, "x", {"as_tensor": "buf0"}), "argument 'x': a tensor is not an object"),
    (set_arg(1, "items", {"as_optional_tensors": [{"as_int": 1}]}),
     "argument 'items': an optional tensor is 'as_int'"),
    (set_arg(1, "device", {"as_device": "cpu"}), "argument 'device': a device is not an object"),
    (set_arg(0, "k", {"as_sym_int": {"as_float": 1.0}}),
     "argument 'k': a symbolic int is 'as_float'"),
])
def test_malformed_nodes_are_named(write, change, message):
    with pytest.raises(PackageError, match=message):
        read_nodes(write(broken(change)))


def test_what_the_proxy_executor_does_not_support_is_named(write):
    with pytest.raises(PackageError, match=r"extern node 0 of .*: call_torchbind \(a method of "
                                           r"a torchbind object\) is not supported"):
        read_nodes(write(broken(lambda n: n[0]["node"].__setitem__("target", "call_torchbind"))))
    with pytest.raises(PackageError, match=r"argument 'k' is a torchbind object "
                                           r"\(as_custom_obj\)"):
        read_nodes(write(broken(set_arg(0, "k", {"as_custom_obj": {"name": "obj0"}}))))
    with pytest.raises(PackageError, match="extern node 1 of .*: argument 'mask' is serialized "
                                           "as 'as_graph', which aoti_cy's proxy executor does "
                                           "not support"):
        read_nodes(write(broken(set_arg(1, "mask", {"as_graph": {}}))))
    with pytest.raises(PackageError, match="output is serialized as 'as_sym_bool'"):
        read_nodes(write(broken(lambda n: n[0]["node"]["outputs"].append(
            {"as_sym_bool": {"as_name": "b"}}))))
