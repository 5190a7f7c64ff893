"""What the input checks (shape contract included) cost next to the run:
per-call time of ``run`` with ``check_inputs=True`` and ``False`` on the same
package, interleaved, medians of repeats.

    python benchmarks/bench_input_checks.py [--calls 2000] [--repeats 9] [--json out.json]

Models: the toy add_one and four_three, the tied-dims pair of the contract
tests, and a random-initialised GPT-2 (2 layers) called with input_ids and
attention_mask of one dynamic batch and sequence.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import aoti_cy  # noqa: E402
from aoti_cy import testing  # noqa: E402


def _cases():
    import contract_models
    gpt2 = contract_models.gpt2_with_mask()
    kwargs = gpt2.call(seed=1, batch=2, seq=16)
    return {
        "add_one": (testing.EXAMPLES["add_one"].package(), testing.EXAMPLES["add_one"].inputs()),
        "four_three": (testing.EXAMPLES["four_three"].package(),
                       testing.EXAMPLES["four_three"].inputs()),
        "tied_pair": (contract_models.tied_pair(), [torch.randn(2, 9), torch.randn(2, 9)]),
        "gpt2": (gpt2.package(), [kwargs["input_ids"], kwargs["attention_mask"]]),
    }


def _per_call(run, inputs, calls):
    start = time.perf_counter_ns()
    for _ in range(calls):
        run(inputs)
    return (time.perf_counter_ns() - start) / calls / 1000.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--models", default="add_one,four_three,tied_pair,gpt2")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    for name, (path, inputs) in _cases().items():
        if name not in args.models.split(","):
            continue
        checked = aoti_cy.load(path)
        unchecked = aoti_cy.load(path, check_inputs=False)
        calls = args.calls if name != "gpt2" else max(50, args.calls // 20)
        for model in (checked, unchecked):
            _per_call(model.run, inputs, 50)
        times = {"checked": [], "unchecked": []}
        for _ in range(args.repeats):
            times["checked"].append(_per_call(checked.run, inputs, calls))
            times["unchecked"].append(_per_call(unchecked.run, inputs, calls))
        on, off = (statistics.median(times[k]) for k in ("checked", "unchecked"))
        results[name] = {"checked_us": round(on, 3), "unchecked_us": round(off, 3),
                         "check_us": round(on - off, 3), "check_share": round((on - off) / on, 4)}
        print(f"{name:>10}: run {on:9.2f} us checked, {off:9.2f} us unchecked; "
              f"the checks {on - off:7.2f} us ({100 * (on - off) / on:5.1f}% of the call)")
        checked.close()
        unchecked.close()
    meta = {"torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "calls": args.calls, "repeats": args.repeats,
            "date": time.strftime("%Y-%m-%d")}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
