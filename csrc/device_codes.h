/* Where a model runs, as the AOTInductor ABI and torch's C shim say it:
 * c10::DeviceType values (c10/core/DeviceType.h). The one definition; the
 * tensor bridge and aoti_cy._device (Cython and Python) read it from here. */
#pragma once

enum { AOTI_CY_DEVICE_CPU = 0, AOTI_CY_DEVICE_CUDA = 1 };
