# csrc/run_gate.h: the atomic gate between runs and close().

cdef extern from "run_gate.h" nogil:
    void aoti_cy_gate_set_closed(int* closed, int value)
    bint aoti_cy_gate_is_closed(int* closed)
    bint aoti_cy_gate_enter(int* active_runs, int* closed)
    void aoti_cy_gate_leave(int* active_runs)
    bint aoti_cy_gate_close_and_drain(int* active_runs, int* closed)
