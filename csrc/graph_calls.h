/* The graphed call path of aoti_cy.cuda_graphs: find the captured graph for a
 * call's inputs, copy them into the graph's static inputs, launch the graph
 * and hand out its outputs, with raw CUDA runtime calls on the call's stream
 * (no dispatcher, no Python objects per input).
 *
 * The CUDA runtime and torch's CUDA shim are found at run time in the
 * libraries torch has loaded (dlsym), so this builds and imports with a
 * CPU-only torch; aoti_cy_graph_runtime_load fails there with a message.
 *
 * Functions that return int give 0 on success and -1 on failure: with a
 * Python exception set where the function needs the GIL, otherwise with a
 * message for this thread in aoti_cy_graph_error().
 */
#pragma once

#include <Python.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One captured graph: the signature it was captured for, its static input
 * and output buffers, and its executable graph. */
typedef struct AotiCyGraphEntry AotiCyGraphEntry;

/* One graph set's per-call state: the signature being looked up, the
 * inputs' data pointers, fresh outputs, the stream the set was last used on
 * and the guard of the call in progress. Used by one thread at a time. */
typedef struct AotiCyGraphCall AotiCyGraphCall;

/* Finds the CUDA runtime and torch's CUDA shim; needs the GIL. */
int aoti_cy_graph_runtime_load(void);

/* The file of the CUDA runtime found (after a successful load). */
const char* aoti_cy_graph_runtime_path(void);

/* The message of this thread's last failure of a function without the GIL. */
const char* aoti_cy_graph_error(void);

AotiCyGraphCall* aoti_cy_graph_call_new(void);
void aoti_cy_graph_call_free(AotiCyGraphCall* call);

/* The signature of `items[0:n]` into `call` (GIL held): 1 when a graph can
 * take them, 0 when not (a non-tensor, a tensor on another device than
 * cuda:`device_index`, a broadcast (zero-stride), conjugate or negative
 * view, a layout other than strided). Never raises. */
int aoti_cy_graph_signature(AotiCyGraphCall* call, PyObject* const* items, Py_ssize_t n,
                            int device_index);

/* A graph entry for the static inputs and outputs of a capture (each a
 * tensor; outputs may be None) and its cudaGraphExec_t (NULL: the caller
 * replays the graph itself between begin and finish). NULL with an
 * exception set. */
AotiCyGraphEntry* aoti_cy_graph_entry_new(PyObject* const* inputs, Py_ssize_t n_in,
                                          PyObject* const* outputs, Py_ssize_t n_out,
                                          void* graph_exec);
void aoti_cy_graph_entry_free(AotiCyGraphEntry* entry);

/* Makes the entry launch `graph_exec` itself (NULL: the caller replays). */
void aoti_cy_graph_entry_set_exec(AotiCyGraphEntry* entry, void* graph_exec);

/* Gives the entry a graph of its own (GIL held, cuda:`device_index`
 * current): a copy node per input into its static input, the captured graph
 * (`captured_graph`, a cudaGraph_t, cloned), a copy node per output out of
 * it; a call then aims the copy nodes at its own tensors
 * (cudaGraphExecMemcpyNodeSetParams1D, only where a pointer changed) and
 * launches once. -1 with a message in aoti_cy_graph_error() where the CUDA
 * runtime cannot (the entry is then unchanged). */
int aoti_cy_graph_entry_embed_copies(AotiCyGraphEntry* entry, void* captured_graph,
                                     int device_index);

/* Whether the entry's calls copy through its own graph. */
int aoti_cy_graph_entry_copies_embedded(const AotiCyGraphEntry* entry);

/* Drops the entry's own graph, if any: calls then copy around the launch
 * of the exec set with aoti_cy_graph_entry_set_exec (NULL: torch replays). */
void aoti_cy_graph_entry_release_own_graph(AotiCyGraphEntry* entry);

/* Whether the signature in `call` is the entry's. Needs no GIL. */
int aoti_cy_graph_entry_matches(const AotiCyGraphEntry* entry, const AotiCyGraphCall* call);

/* Begins a graphed call without the GIL: makes cuda:`device_index` and
 * `stream` (NULL: that device's current stream) current, orders the stream
 * after the one the set was last used on, copies every input that is not
 * the static one into it, and launches the graph where the entry has its
 * executable. An entry with embedded copies does all of it in its one
 * launch, fresh outputs (with `fresh_outputs`) allocated first. On success
 * the device and stream stay current until aoti_cy_graph_finish, which must
 * follow; on failure nothing is left. */
int aoti_cy_graph_begin(AotiCyGraphCall* call, AotiCyGraphEntry* entry, int device_index,
                        void* stream, int fresh_outputs);
/* With a NULL entry, begin only makes the device and stream current and
 * orders the stream (before a capture), and finish only puts them back. */

/* Ends a graphed call without the GIL: with `fresh_outputs`, allocates the
 * outputs from torch's caching allocator for the call's stream and copies
 * the static outputs into them; puts back the device and stream. */
int aoti_cy_graph_finish(AotiCyGraphCall* call, const AotiCyGraphEntry* entry,
                         int fresh_outputs);

/* Waits for the stream the set was last used on, on cuda:`device_index`
 * (before graphs of the set are dropped, so no replay in flight reads freed
 * memory); the current device is put back. No GIL needed. */
int aoti_cy_graph_call_wait(AotiCyGraphCall* call, int device_index);

/* A new list of the fresh outputs of the last finished call (GIL held),
 * None where the model returned none. Drops the call's references. */
PyObject* aoti_cy_graph_take_outputs(AotiCyGraphCall* call);

#ifdef __cplusplus
}
#endif
