/* A model's shape contract, checked on every call without the GIL.
 *
 * aoti_cy/_shape_contract.py reads, from the model's generated wrapper
 * source, every input's sizes and strides as expressions of size symbols,
 * how each symbol is bound (from the first input dim that holds it), the
 * symbols' ranges and each input's dtype and device type, and encodes them
 * as one array of int64 words plus the texts its messages need. The check
 * binds the symbols from the call's tensors, then compares every dim and
 * stride with its expression: inputs whose tied dims disagree are refused
 * before the model reads past the shorter one. Plain C declarations.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct AtenTensorOpaque AtenTensorOpaque;
typedef struct AotiCyShapeContract AotiCyShapeContract;

/* Operation codes of the size and stride programs (an integer stack
 * machine; each operation is two words: code, argument). */
enum {
  AOTI_CY_OP_CONST = 0,    /* push the argument */
  AOTI_CY_OP_SYMBOL = 1,   /* push the value of symbol slot `argument` */
  AOTI_CY_OP_ADD = 2,
  AOTI_CY_OP_SUB = 3,
  AOTI_CY_OP_MUL = 4,
  AOTI_CY_OP_FLOORDIV = 5,
  AOTI_CY_OP_MOD = 6,
  AOTI_CY_OP_MAX = 7,
  AOTI_CY_OP_MIN = 8,
  AOTI_CY_OP_NEG = 9,
};

/* Where a binding reads its value. */
enum {
  AOTI_CY_FROM_SIZE = 0,
  AOTI_CY_FROM_STRIDE = 1,
  AOTI_CY_FROM_SYMBOL = 2,
};

/* The contract encoded in `words[0:length]` (see encode() in
 * aoti_cy/_shape_contract.py for the layout), with `texts[0:num_texts]`:
 * one label per input, one name per symbol, then the text of each covered
 * dim's size and stride. NULL when the words do not describe a valid
 * contract or memory runs out. */
AotiCyShapeContract* aoti_cy_shape_contract_new(const int64_t* words, size_t length,
                                                const char* const* texts, size_t num_texts);
void aoti_cy_shape_contract_free(AotiCyShapeContract* contract);

/* Whether input `i` is checked in full by the contract (rank, dtype,
 * device type, sizes, strides): the model's own check of it is then not
 * needed. */
int aoti_cy_shape_contract_covers(const AotiCyShapeContract* contract, size_t i);

/* Checks the `n` handles (each already known to be a defined, dense
 * tensor). Returns -1 when they fit, else the index of an input that does
 * not, with the whole message in `reason` (NUL-terminated, cut to `size`
 * bytes). Never throws; needs no GIL; safe from any number of threads. */
long aoti_cy_shape_contract_check(const AotiCyShapeContract* contract,
                                  AtenTensorOpaque** handles, size_t n, char* reason,
                                  size_t size);

#ifdef __cplusplus
}
#endif
