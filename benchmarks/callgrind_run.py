"""Instructions per call of aoti_cy's `run`, `model(*args)` or the C API's
`run_handles`, counted by callgrind: repeatable where wall time on a shared
machine is not.

    ATEN_CPU_CAPABILITY=default PYTHONHASHSEED=0 valgrind --tool=callgrind \\
        --callgrind-out-file=cg.out python benchmarks/callgrind_run.py run 5000
    callgrind_annotate --inclusive=yes --auto=no --threshold=100 cg.out \\
        | grep -E 'ModelContainer_[0-9]+run\(|_[0-9]+__call__\(|_run_handles\(|run_loop\('

then divide the entry's inclusive count by the calls (``5000 + 200``
warm-up). ``run_handles`` is driven by ``floor/nogil_loop.pyx`` (build it
once outside valgrind: ``python benchmarks/callgrind_run.py run_handles 1``).
The model is compiled for AVX2 at most, kernels and wrapper alike
(``cpp.march`` and ``cpp.simdlen``): valgrind 3.19 cannot decode the AVX-512
code inductor otherwise picks on a machine that has it.
"""

import os
import sys

import torch

import aoti_cy
from aoti_cy import testing

WARMUP = 200


def main():
    how, calls = sys.argv[1], int(sys.argv[2])
    model_cls, args = {"add_one": (testing.AddOne, (torch.randn(8),)),
                       "four_three": (testing.FourThree, tuple(torch.randn(8) for _ in range(4)))
                       }[sys.argv[3] if len(sys.argv) > 3 else "add_one"]
    path = testing.compile_package(model_cls, args, inductor_configs={"cpp.march": "x86-64-v3",
                                                                     "cpp.simdlen": 256})
    model = aoti_cy.load(path)
    if how == "run":
        run, inputs = model.run, list(args)
        for _ in range(WARMUP + calls):
            run(inputs)
    elif how == "run_handles":
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "floor"))
        import build
        build.build_nogil_loop().run_loop(model, list(args), WARMUP + calls)
    else:
        for _ in range(WARMUP + calls):
            model(*args)


if __name__ == "__main__":
    main()
