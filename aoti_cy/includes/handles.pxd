# The opaque handle types of the AOTInductor C ABI (interface.h, shim.h), as
# plain C: what the public C API (aoti_cy/capi.pxd) needs, so that consumers
# compile as C or C++ alike. abi.pxd builds the rest of the ABI on these.

cdef extern from * nogil:
    """
    typedef struct AtenTensorOpaque AtenTensorOpaque;
    typedef struct AOTInductorModelOpaque AOTInductorModelOpaque;
    typedef struct AOTInductorModelContainerOpaque AOTInductorModelContainerOpaque;
    typedef struct AOTInductorStreamOpaque AOTInductorStreamOpaque;
    typedef struct AOTInductorConstantMap AOTInductorConstantMap;
    typedef struct AOTIProxyExecutorOpaque AOTIProxyExecutorOpaque;
    """
    ctypedef struct AtenTensorOpaque
    ctypedef struct AOTInductorModelOpaque
    ctypedef struct AOTInductorModelContainerOpaque
    ctypedef struct AOTInductorStreamOpaque
    ctypedef struct AOTInductorConstantMap
    ctypedef struct AOTIProxyExecutorOpaque

ctypedef AtenTensorOpaque* AtenTensorHandle
ctypedef AOTInductorModelOpaque* AOTInductorModelHandle
ctypedef AOTInductorModelContainerOpaque* AOTInductorModelContainerHandle
ctypedef AOTInductorStreamOpaque* AOTInductorStreamHandle
ctypedef AOTInductorConstantMap* AOTInductorConstantMapHandle
ctypedef AOTIProxyExecutorOpaque* AOTIProxyExecutorHandle
