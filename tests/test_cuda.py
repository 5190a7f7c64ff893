"""CUDA: parity, streams and device checks on a real GPU (skipped without one)."""

import pytest
import torch

import aoti_cy
from aoti_cy.testing import EXAMPLES
from conftest import assert_outputs_match

pytestmark = pytest.mark.cuda
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)


@pytest.fixture(scope="module")
def cuda_package():
    return lambda name: EXAMPLES[name].package("cuda")


@pytest.mark.parametrize("name", ["add_one", "multi_io", "mlp", "same_twice"])
def test_cuda_outputs_match_eager(cuda_package, name):
    example = EXAMPLES[name]
    inputs = example.inputs("cuda")
    with aoti_cy.load(cuda_package(name)) as model:
        assert model.device == torch.device("cuda", 0)
        outputs = model.run(inputs)
        assert all(t.is_cuda for t in outputs)
    with torch.no_grad():
        assert_outputs_match(outputs, example.eager("cuda")(*inputs))


def test_cpu_tensor_for_cuda_model_is_refused(cuda_package):
    with aoti_cy.load(cuda_package("add_one")) as model:
        with pytest.raises(ValueError, match=r"input 0 .* is on cpu but the model runs on cuda:0"):
            model.run([torch.randn(8)])


def test_run_on_a_side_stream_is_ordered(cuda_package):
    (x,) = EXAMPLES["add_one"].inputs("cuda")
    stream = torch.cuda.Stream()
    with aoti_cy.load(cuda_package("add_one")) as model:
        with torch.cuda.stream(stream):
            # Work queued on the side stream before the run must be seen by it.
            y = x * 3
            (out,) = model.run([y])                 # current stream = side stream
            (out2,) = model.run([y], stream=stream)  # explicit stream
        stream.synchronize()
    torch.testing.assert_close(out, x * 3 + 1)
    torch.testing.assert_close(out2, x * 3 + 1)
