# The Python face of the Cython API (capi.pxd): its version.
CAPI_VERSION: int
