"""Command line: ``python -m aoti_cy {inspect,bench,demo}``.

Exit codes: 0 success, 1 a failure (printed without a traceback unless
``--debug``), 2 a usage error.
"""

# This package is the command line only; the library never imports it.
# main() parses the arguments and hands each command to its module:
# inspect (inspect_text for the text form), bench, demo.

import argparse
import json
import sys

BENCH_EPILOG = """\
Comparing with torch (--compare-torch): the figures compared come from one
process, interleaved: each repeat times a block of calls of every variant in
turn (aoti_cy run, aoti_cy model(...), torch loader.run, torch model(...)),
so drift of the machine moves all alike; p50 is the median over every call.
That process is a child of this one, because torch's loader segfaults on
some packages (pickle_weights, or no weights): if the child dies, aoti_cy is
timed alone in this process and the output says torch crashed, and how.
Without --compare-torch, aoti_cy is timed here, with no child.
On CUDA every call is timed until its outputs are ready (a synchronize after
each call, in every variant); --cuda-graphs adds "aoti_cy graphs model(...)".
"""


class UsageError(Exception):
    """Bad command-line input found after parsing (exit code 2)."""


def inspect_command(args):
    """Show each model of a package: inputs and outputs by name, dtype,
    shape (dynamic ranges) and device, weights, and whether it runs as is."""
    from aoti_cy.cli.bench import _import_modules
    from aoti_cy.cli.inspect import inspect_package
    from aoti_cy.cli.inspect_text import format_report
    _import_modules(args.imports)
    report = inspect_package(args.path, model_name=args.model_name, run=not args.no_run)
    print(json.dumps(report, indent=2) if args.json
          else format_report(report, constants=args.constants))
    return 0


def bench_command(args):
    """Time calls of a package with aoti_cy (run and model(...)), optionally
    interleaved with torch's own loader on the same package."""
    from aoti_cy.cli import bench as _bench
    if args.iters < 1 or args.threads < 1 or args.repeats < 1 or args.warmup < 0:
        raise UsageError("--iters, --repeats and --threads must be positive, "
                         "--warmup not negative")
    if args.repeats > args.iters:
        raise UsageError("--repeats cannot exceed --iters (each repeat times "
                         "iters/repeats calls of every variant)")
    config = {"path": args.path, "model_name": args.model_name,
              "inputs": args.inputs or args.path + ".inputs.pt", "iters": args.iters,
              "repeats": args.repeats, "warmup": args.warmup, "threads": args.threads,
              "num_models": args.num_models, "imports": args.imports,
              "cuda_graphs": args.cuda_graphs}
    try:
        report = _bench.bench(config, compare_torch=args.compare_torch,
                              progress=sys.stderr.isatty() and not args.json)
    except _bench.BenchUsageError as e:
        raise UsageError(str(e)) from None
    print(json.dumps(report, indent=2) if args.json else _bench.format_report(report))
    return 0


def demo_command(args):
    """Compile a small built-in model, load it with aoti_cy, run it, compare
    with eager PyTorch and print what happened."""
    from aoti_cy.cli.demo import demo_command as demo
    return demo(args)


def _parser():
    parser = argparse.ArgumentParser(prog="python -m aoti_cy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    artifact = "a .pt2, an extracted package directory or a model .so"
    imports = dict(action="append", dest="imports", default=[], metavar="MODULE",
                   help="import MODULE first (one that registers the model's custom ops "
                        "or output types); repeatable")

    p = commands.add_parser("inspect", help=inspect_command.__doc__.splitlines()[0],
                            description=inspect_command.__doc__)
    p.add_argument("path", help=artifact)
    p.add_argument("--model-name", default=None,
                   help="show only this model of the package (default: every model)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--constants", action="store_true", help="list every constant")
    p.add_argument("--no-run", action="store_true",
                   help="skip the two trial runs on zero-filled inputs that find the "
                        "outputs' dtypes and shapes")
    p.add_argument("--import", **imports)
    p.set_defaults(run=inspect_command)

    p = commands.add_parser("bench", help=bench_command.__doc__.splitlines()[0],
                            description=bench_command.__doc__, epilog=BENCH_EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help=artifact)
    p.add_argument("--model-name", default="model", help="which model of the package")
    p.add_argument("--inputs", help="torch.save'd list of input tensors, or a pair "
                                    "(args, kwargs) (default: PATH.inputs.pt)")
    p.add_argument("--iters", type=int, default=10000, help="calls per variant")
    p.add_argument("--repeats", type=int, default=20,
                   help="blocks each variant's calls are split into, interleaved")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--threads", type=int, default=1,
                   help="Python threads calling at once; pair with --num-models and "
                        "OMP_NUM_THREADS so threads x OpenMP threads <= cores")
    p.add_argument("--num-models", type=int, default=1)
    p.add_argument("--compare-torch", action="store_true",
                   help="also time torch's own loader, interleaved (see below)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="also time model(...) of the package loaded with cuda_graphs=True "
                        "(CUDA models)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--import", **imports)
    p.set_defaults(run=bench_command)

    p = commands.add_parser("demo", help=demo_command.__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=10000)
    p.set_defaults(run=demo_command)
    return parser


def main(argv=None):
    """Run one command of ``python -m aoti_cy``.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``python -m aoti_cy`` (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 1 on a failure (its message printed to stderr, the
        traceback only with ``--debug``).

    Raises
    ------
    SystemExit
        With status 2 for a usage error (argparse prints the usage), and
        with status 0 after ``--help``.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UsageError as e:
        parser.error(str(e))   # exits 2
    except Exception as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
