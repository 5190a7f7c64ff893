"""Running real compiled models through the C ABI: parity with eager PyTorch,
the artifact kinds, properties against torch's own loader, grad mode."""

import os
import zipfile

import pytest
import torch

import aoti_cy
from aoti_cy.testing import compile_package
from conftest import WEIGHTS_OUTSIDE_SO, assert_outputs_match


@pytest.mark.parametrize("name", ["add_one", "multi_io", "mlp", "same_twice", "heavy"])
def test_outputs_match_eager(package, example, name):
    inputs = example(name).inputs()
    with aoti_cy.load(package(name)) as model:
        outputs = model.run(inputs)
    with torch.no_grad():
        assert_outputs_match(outputs, example(name).eager()(*inputs))


@pytest.mark.parametrize("fmt", sorted(WEIGHTS_OUTSIDE_SO))
def test_weights_stored_outside_the_library_are_loaded(package, example, fmt):
    path = package("mlp", **WEIGHTS_OUTSIDE_SO[fmt])
    inputs = example("mlp").inputs()
    with aoti_cy.load(path) as model:
        outputs = model.run(inputs)
    with torch.no_grad():
        assert_outputs_match(outputs, example("mlp").eager()(*inputs))


def test_same_handle_twice_is_one_tensor(package, example):
    (x,) = example("same_twice").inputs()
    with aoti_cy.load(package("same_twice")) as model:
        first, second = model.run([x])
        torch.testing.assert_close(first, x * 2)
        torch.testing.assert_close(second, x * 2)
        # Whether the model returns one handle or two, the data is shared.
        assert first.data_ptr() == second.data_ptr()


def test_tuple_and_sequence_inputs(package, example):
    inputs = example("multi_io").inputs()
    with aoti_cy.load(package("multi_io")) as model:
        from_list = model.run(inputs)
        from_tuple = model.run(tuple(inputs))
    for a, b in zip(from_list, from_tuple):
        torch.testing.assert_close(a, b)


def extract(path, into):
    with zipfile.ZipFile(path) as archive:
        archive.extractall(into)
    return into


def library_in(directory):
    for root, _, files in os.walk(directory):
        for f in files:
            if f.endswith(".wrapper.so"):
                return os.path.join(root, f)
    raise AssertionError(f"no .so under {directory}")


def test_directory_and_bare_library_load(package, example, tmp_path):
    directory = extract(package("mlp"), tmp_path / "pkg")
    inputs = example("mlp").inputs()
    with torch.no_grad():
        expected = example("mlp").eager()(*inputs)
    with aoti_cy.load(directory) as model:
        assert_outputs_match(model.run(inputs), expected)
    with aoti_cy.load(library_in(directory)) as model:
        assert model.device == torch.device("cpu")
        assert_outputs_match(model.run(inputs), expected)
    with aoti_cy.ModelContainer(library_in(directory), device="cpu", num_models=2) as model:
        assert_outputs_match(model.run(inputs), expected)


def test_properties_match_torch_loader(package, example):
    path = package("multi_io")
    reference = torch._inductor.aoti_load_package(path)
    inputs = example("multi_io").inputs()
    with aoti_cy.load(path) as model:
        assert model.num_inputs == len(inputs) == len(model.input_names)
        assert model.num_outputs == len(reference.loader.run(inputs)) == len(model.output_names)
        assert all(isinstance(n, str) and n for n in model.input_names + model.output_names)
        assert model.call_spec == tuple(reference.loader.get_call_spec())
        assert str(model.device) == reference.loader.get_metadata()["AOTI_DEVICE_KEY"]
        assert model.closed is False
    assert model.closed is True


def test_constants_match_torch_loader(package):
    path = package("mlp")
    reference = torch._inductor.aoti_load_package(path)
    with aoti_cy.load(path) as model:
        assert sorted(model.constant_fqns) == sorted(reference.get_constant_fqns())
        params = dict(aoti_cy.testing.make_model(aoti_cy.testing.MLP).named_parameters())
        for info in model.constants:
            assert info.dtype == params[info.original_fqn].dtype
            assert info.data_size == params[info.original_fqn].nbytes


def test_outputs_never_require_grad_and_grad_mode_is_restored(package, example):
    inputs = [t.requires_grad_() for t in example("multi_io").inputs()]
    with aoti_cy.load(package("multi_io")) as model, torch.enable_grad():
        outputs = model.run(inputs)
        assert torch.is_grad_enabled()
    assert not any(t.requires_grad for t in outputs)
    with torch.no_grad():
        model2 = aoti_cy.load(package("multi_io"))
        model2.run([t.detach() for t in inputs])
        assert not torch.is_grad_enabled()
    model2.close()


def test_many_containers_from_one_library(package, example):
    directory_model = aoti_cy.load(package("add_one"))
    (x,) = example("add_one").inputs()
    others = [aoti_cy.ModelContainer(directory_model.library_path) for _ in range(5)]
    assert all(o.library is directory_model.library for o in others)
    for other in others:
        torch.testing.assert_close(other.run([x])[0], x + 1)
        other.close()
    directory_model.close()


def test_run_single_threaded_matches_run(package, example):
    inputs = example("multi_io").inputs()
    with aoti_cy.load(package("multi_io")) as model:
        for a, b in zip(model.run_single_threaded(inputs), model.run(inputs)):
            torch.testing.assert_close(a, b)


class ManyTensors(torch.nn.Module):
    """More inputs and outputs than a run keeps on the stack (16)."""

    def forward(self, *xs):
        return tuple(x * (i + 1) + xs[-1] for i, x in enumerate(xs[:18]))


def test_more_tensors_than_the_stack_holds():
    inputs = [torch.randn(3, generator=torch.Generator().manual_seed(i)) for i in range(20)]
    path = compile_package(ManyTensors, inputs)
    want = ManyTensors()(*inputs)
    with aoti_cy.load(path) as model:
        assert (model.num_inputs, model.num_outputs) == (20, 18)
        assert_outputs_match(model.run(inputs), want)
        assert_outputs_match(model(*inputs), want)
        with pytest.raises(ValueError, match="input 19 "):
            model.run(inputs[:19] + [torch.randn(4)])
    with aoti_cy.Model(path) as single:
        assert_outputs_match(single.run(inputs), want)
