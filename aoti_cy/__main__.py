"""Command line: ``python -m aoti_cy demo``."""

import argparse
import sys


def demo(args):
    """Compile a small built-in model, load it with aoti_cy, run it, compare
    with eager PyTorch and print what happened."""
    import time

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
    print(f"   constants: " + ", ".join(
        f"{c.original_fqn} {c.dtype} {c.data_size} B" for c in model.constants))

    inputs = example.inputs()
    (output,) = model.run(inputs)
    with torch.no_grad():
        expected = example.eager()(*inputs)
    error = (output - expected).abs().max().item()
    print(f"3. ran on input {tuple(inputs[0].shape)}: output {tuple(output.shape)}, "
          f"max |aoti_cy - eager| = {error:.2e}")
    torch.testing.assert_close(output, expected)

    calls = args.calls
    start = time.perf_counter()
    for _ in range(calls):
        model.run(inputs)
    per_call = (time.perf_counter() - start) / calls * 1e6
    print(f"4. {calls} more runs: {per_call:.1f} us per call")
    model.close()
    print("OK: aoti_cy output matches eager PyTorch")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m aoti_cy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help=demo.__doc__.splitlines()[0])
    demo_parser.add_argument("--calls", type=int, default=10000)
    demo_parser.set_defaults(run=demo)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
