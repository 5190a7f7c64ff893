// The C floor: a model's C ABI driven in a loop with no Python at all.
//
// Built as a shared library (see build.py) and called through ctypes, so it
// runs in the benchmark's own process. Per call it does what any caller of
// the ABI must: one new handle per input (an owned at::Tensor* over a
// preallocated tensor, as the model steals it), the run, and freeing the
// output handles. Nothing else.
#include <ATen/ATen.h>

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace {

using Handle = void*;
using CreateFn = int32_t (*)(Handle*, size_t, const char*, const char*);
using DeleteFn = int32_t (*)(Handle);
using RunFn = int32_t (*)(Handle, Handle*, size_t, Handle*, size_t, Handle, Handle);

}  // namespace

// Times `repeats` batches of `iters` runs of the CPU model in `so_path` on
// float32 inputs of the given shapes (`ndims[i]` sizes each, laid end to end
// in `sizes`). Writes each batch's microseconds per call into `us_per_call`.
// Returns 0, or a negative step number on failure (printed to stderr).
extern "C" int aoti_c_floor(const char* so_path, int num_inputs,
                            const int* ndims, const int64_t* sizes,
                            int num_outputs, long iters, int repeats,
                            double* us_per_call) {
  void* lib = dlopen(so_path, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    std::fprintf(stderr, "c_floor: %s\n", dlerror());
    return -1;
  }
  auto create = reinterpret_cast<CreateFn>(
      dlsym(lib, "AOTInductorModelContainerCreateWithDevice"));
  auto destroy = reinterpret_cast<DeleteFn>(dlsym(lib, "AOTInductorModelContainerDelete"));
  auto run = reinterpret_cast<RunFn>(dlsym(lib, "AOTInductorModelContainerRun"));
  if (!create || !destroy || !run) return -2;
  Handle container = nullptr;
  if (create(&container, 1, "cpu", nullptr) != 0) return -3;

  std::vector<at::Tensor> inputs;
  for (int i = 0, at_size = 0; i < num_inputs; at_size += ndims[i], ++i) {
    std::vector<int64_t> shape(sizes + at_size, sizes + at_size + ndims[i]);
    inputs.push_back(at::randn(shape));
  }
  std::vector<Handle> in(num_inputs), out(num_outputs);
  int status = 0;
  for (int r = 0; r < repeats && status == 0; ++r) {
    auto start = std::chrono::steady_clock::now();
    for (long k = 0; k < iters; ++k) {
      for (int i = 0; i < num_inputs; ++i) in[i] = new at::Tensor(inputs[i]);
      if (run(container, in.data(), in.size(), out.data(), out.size(), nullptr, nullptr) != 0) {
        status = -4;
        break;
      }
      for (Handle h : out) delete static_cast<at::Tensor*>(h);
    }
    std::chrono::duration<double, std::micro> took = std::chrono::steady_clock::now() - start;
    us_per_call[r] = took.count() / iters;
  }
  destroy(container);
  return status;
}
