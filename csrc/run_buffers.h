/* The handle arrays of one run: input handles, their keepalive references
 * and output handles. Up to kStackHandles tensors they live in the object
 * itself (on the caller's stack), past that on the heap: most models take
 * and return a few tensors, and a run allocates nothing for them. Shared by
 * both run paths (ModelContainer and Model). Header-only; no torch headers. */
#pragma once

#include <stddef.h>

#include <vector>

#include "tensor_bridge.h"

struct AotiCyRunBuffers {
  static constexpr size_t kStackHandles = 16;

  AtenTensorOpaque** inputs = input_stack;
  AotiCyTensorRef** keepalive = keep_stack;
  AtenTensorOpaque** outputs = output_stack;

  AotiCyRunBuffers() = default;
  AotiCyRunBuffers(const AotiCyRunBuffers&) = delete;
  AotiCyRunBuffers& operator=(const AotiCyRunBuffers&) = delete;

  /* Room for this many tensors each way; the output slots are NULLed. */
  void reserve(size_t num_inputs, size_t num_outputs) {
    if (num_inputs > kStackHandles) {
      input_heap.resize(num_inputs);
      keep_heap.resize(num_inputs);
      inputs = input_heap.data();
      keepalive = keep_heap.data();
    }
    if (num_outputs > kStackHandles) {
      output_heap.resize(num_outputs);
      outputs = output_heap.data();
    }
    for (size_t i = 0; i < num_outputs; ++i) outputs[i] = nullptr;
  }

 private:
  AtenTensorOpaque* input_stack[kStackHandles];
  AotiCyTensorRef* keep_stack[kStackHandles];
  AtenTensorOpaque* output_stack[kStackHandles];
  std::vector<AtenTensorOpaque*> input_heap, output_heap;
  std::vector<AotiCyTensorRef*> keep_heap;
};
