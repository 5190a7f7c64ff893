/* The gate between runs and close(): runs may come from threads that do not
 * hold the GIL (the cimport API), so the in-flight count and the closed flag
 * are atomics. A run increments the count and then reads the flag; close()
 * sets the flag and then waits for the count to reach zero. With sequentially
 * consistent order at least one side sees the other, so no run starts on a
 * container that close() is about to delete.
 *
 * The two ints live in the owning object (plain C fields, so the public .pxd
 * layout needs no header); these functions are the only code touching them. */
#pragma once

#include <time.h>

static inline void aoti_cy_gate_set_closed(int* closed, int value) {
  __atomic_store_n(closed, value, __ATOMIC_SEQ_CST);
}

static inline int aoti_cy_gate_is_closed(int* closed) {
  return __atomic_load_n(closed, __ATOMIC_SEQ_CST);
}

/* 1 when the caller may run (and must call aoti_cy_gate_leave); 0 when closed. */
static inline int aoti_cy_gate_enter(int* active_runs, int* closed) {
  __atomic_add_fetch(active_runs, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(closed, __ATOMIC_SEQ_CST)) {
    __atomic_sub_fetch(active_runs, 1, __ATOMIC_SEQ_CST);
    return 0;
  }
  return 1;
}

static inline void aoti_cy_gate_leave(int* active_runs) {
  __atomic_sub_fetch(active_runs, 1, __ATOMIC_SEQ_CST);
}

/* Closes the gate, then waits for the runs in flight; call it without the GIL.
 * Returns 1 for the caller that closed it, 0 if it was closed already. */
static inline int aoti_cy_gate_close_and_drain(int* active_runs, int* closed) {
  int was_closed = __atomic_exchange_n(closed, 1, __ATOMIC_SEQ_CST);
  struct timespec pause = {0, 20000}; /* 20 us, doubling up to 1 ms */
  while (__atomic_load_n(active_runs, __ATOMIC_SEQ_CST) != 0) {
    nanosleep(&pause, NULL);
    if (pause.tv_nsec < 1000000) pause.tv_nsec *= 2;
  }
  return !was_closed;
}
