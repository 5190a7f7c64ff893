/* Checking a run's inputs with the model's own generated checks, fast.
 *
 * Inductor generates `static void check_input_<i>(AtenTensorHandle*)` in
 * every model: the input's dtype, each size and stride it knows, and its
 * device type, throwing std::runtime_error on a mismatch. The model itself
 * runs them only under AOTI_RUNTIME_CHECK_INPUTS=1, together with a costly
 * size/stride assertion per input. A guard calls them directly (aoti_cy finds
 * them in the library's symbol table) and adds what they lack:
 *   - the input's rank, which they never compare (learned once per input);
 *   - a memo of the first layout they accepted, so that the usual call, with
 *     the same dtype, sizes and strides every time, costs a few compares
 *     (the checks cross into libtorch several times per input);
 *   - a clear refusal of non-strided (sparse, nested) tensors.
 * A non-contiguous input whose strides the model was not compiled for is
 * refused, not copied: a copy would hide the cost, and lose any in-place
 * update a model makes to its input.
 * Plain C declarations: no torch include path needed to use this header.
 */
#pragma once

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct AtenTensorOpaque AtenTensorOpaque;

/* A model's check of input `i`: reads `handles[i]`, throws when it does not fit. */
typedef void (*AotiCyInputCheck)(AtenTensorOpaque** handles);

typedef struct AotiCyInputGuards AotiCyInputGuards;

typedef struct AotiCyShapeContract AotiCyShapeContract;

/* Guards for `n` inputs from `checks[0:n]` (a NULL check leaves that input
 * unchecked), or NULL if out of memory. `labels[0:n]` name the inputs in
 * messages. `cuda_index` is the GPU a CUDA model runs on, -1 for a CPU
 * model: a CUDA input on another GPU is refused (the model's checks compare
 * the device type only). `contract` (owned by the guards from now on, may
 * be NULL) is the model's shape contract (shape_contract.h): it replaces
 * the model's check of every input it covers, and ties the inputs' dims. */
AotiCyInputGuards* aoti_cy_input_guards_new(const AotiCyInputCheck* checks, size_t n,
                                            const char* const* labels, int cuda_index,
                                            AotiCyShapeContract* contract);
void aoti_cy_input_guards_free(AotiCyInputGuards* guards);

/* Checks the `n` input handles. Returns -1 when every input fits, else the
 * index of an input that does not, with the whole message in `reason`
 * (NUL-terminated, cut to `size` bytes). Never throws; needs no GIL; any
 * number of threads may share one set of guards. */
long aoti_cy_check_inputs(AotiCyInputGuards* guards, AtenTensorOpaque** handles,
                          size_t n, char* reason, size_t size);

#ifdef __cplusplus
}
#endif
