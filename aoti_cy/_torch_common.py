"""What the torch-compatible entry points share: the ``check_inputs``
default, the count of containers they build and torch's error forms
(torch's stream handles are read by ``aoti_cy._device.stream_address``)."""

import os
import threading

from aoti_cy.errors import (ArgumentRuntimeError, PackageError, PackageNotFoundRuntimeError,
                            PackageRuntimeError)

CHECK_INPUTS_ENV = "AOTI_CY_CHECK_INPUTS"
_FALSE = ("0", "false", "no", "off")
_TRUE = ("1", "true", "yes", "on")


def resolve_check_inputs(check_inputs):
    """``check_inputs`` itself when given, else what ``AOTI_CY_CHECK_INPUTS``
    says (read at every load), else True."""
    if check_inputs is not None:
        if not isinstance(check_inputs, (bool, int)):
            raise TypeError(f"check_inputs must be a bool or None, got "
                            f"{type(check_inputs).__name__}")
        return bool(check_inputs)
    value = os.environ.get(CHECK_INPUTS_ENV, "").strip().lower()
    if value == "" or value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{CHECK_INPUTS_ENV}={os.environ[CHECK_INPUTS_ENV]!r}: expected one of "
                     f"{', '.join(_TRUE + _FALSE)}")


_count_lock = threading.Lock()
_containers_built = 0


def count_container(container):
    """Count one container built by a torch-compatible entry point."""
    global _containers_built
    with _count_lock:
        _containers_built += 1
    return container


def containers_built():
    """How many containers the torch-compatible entry points (and torch's
    names while patched) have built in this process."""
    return _containers_built


# aoti_cy's exception -> the form also a RuntimeError, as torch's loader raises.
_RUNTIME_FORMS = ((PackageError, PackageRuntimeError),
                  (FileNotFoundError, PackageNotFoundRuntimeError),
                  (ValueError, ArgumentRuntimeError))


def as_runtime_error(error, torch_message=None):
    """``error`` as a RuntimeError of aoti_cy's type family (its
    ``*RuntimeError`` form when it is not one), its message led by
    ``torch_message`` when given: what torch's loader says in the same
    situation, so code matching torch's messages still matches."""
    if torch_message is None and isinstance(error, RuntimeError):
        return error
    message = error.args[0] if len(error.args) == 1 else str(error)
    if torch_message is not None:
        message = f"{torch_message}: {message}"
    if isinstance(error, RuntimeError):
        try:
            converted = type(error)(message)
        except TypeError:   # a class built from other arguments (AOTIError)
            converted = RuntimeError(message)
        return converted.with_traceback(error.__traceback__)
    for kind, form in _RUNTIME_FORMS:
        if isinstance(error, kind):
            return form(message).with_traceback(error.__traceback__)
    return error


def update_constant_buffer(container, tensor_map, use_inactive, validate_full_updates,
                           user_managed=False):
    """torch's ``update_constant_buffer`` on an aoti_cy container: checked
    (names, dtypes, shapes, devices) before anything changes; a refusal is
    the ``RuntimeError`` torch's callers catch."""
    try:
        container.update_constant_buffer(
            tensor_map, use_inactive=bool(use_inactive),
            validate_full_update=bool(validate_full_updates), user_managed=bool(user_managed))
    except ValueError as e:
        raise as_runtime_error(e) from None


def cuda_unavailable(device, path):
    """torch's error for a model of a GPU device this process cannot use."""
    return PackageRuntimeError(
        f"Cannot load AOTInductor package for device '{device}' because CUDA is not "
        f"available in this process. {path} holds a model compiled for {device}; "
        f"torch.cuda.is_available() is False")
