"""``python -m aoti_cy demo``: the README's main job, end to end."""

import time

__all__ = ["demo_command"]


def demo_command(args):
    """Compile a small built-in model, load it with aoti_cy, run it, compare
    with eager PyTorch and print what happened."""
    import torch

    import aoti_cy
    from aoti_cy.testing import EXAMPLES, cache_dir

    example = EXAMPLES["mlp"]
    print(f"aoti_cy {aoti_cy.__version__} (built for torch {aoti_cy.BUILT_FOR_TORCH}), "
          f"torch {torch.__version__}")
    print(f"1. compiling the demo model (MLP 64->64->8) with AOTInductor "
          f"(cached in {cache_dir()}) ...")
    start = time.perf_counter()
    path = example.package()
    print(f"   package: {path} ({time.perf_counter() - start:.1f} s)")

    start = time.perf_counter()
    model = aoti_cy.load(path)
    print(f"2. loaded in {(time.perf_counter() - start) * 1e3:.1f} ms: {model}")
    print(f"   inputs {model.input_names}, outputs {model.output_names}, device {model.device}")
    print("   constants: " + ", ".join(
        f"{c.original_fqn} {c.dtype} {c.data_size} B" for c in model.constants))

    inputs = example.inputs()
    output = model(*inputs)
    with torch.no_grad():
        expected = example.eager()(*inputs)
    error = (output - expected).abs().max().item()
    print(f"3. ran on input {tuple(inputs[0].shape)}: output {tuple(output.shape)}, "
          f"max |aoti_cy - eager| = {error:.2e}")
    torch.testing.assert_close(output, expected)

    start = time.perf_counter()
    for _ in range(args.calls):
        model.run(inputs)
    per_call = (time.perf_counter() - start) / args.calls * 1e6
    print(f"4. {args.calls} more runs: {per_call:.1f} us per call")
    model.close()
    print("OK: aoti_cy output matches eager PyTorch")
    return 0
