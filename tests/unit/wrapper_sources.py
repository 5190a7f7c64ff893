"""Small wrapper sources written as inductor writes ``<stem>.wrapper.cpp``:
one ``check_input_<i>`` per input (dtype, dim bounds, static sizes and
strides, device type, in the words of its error messages) and a
``run_impl`` that binds size symbols and asserts each input's sizes and
strides. The tests build the sources they need from these pieces."""

DTYPES = {"float32": ("aoti_torch_dtype_float32()", "Float"),
          "int64": ("aoti_torch_dtype_int64()", "Long"),
          "bfloat16": ("aoti_torch_dtype_bfloat16()", "BFloat16"),
          "bool": ("aoti_torch_dtype_bool()", "Bool")}
DEVICES = {"cpu": 0, "cuda": 1}


def check_input(index, dtype="float32", device="cpu", sizes=(), bounds=(), strides=()):
    """``check_input_<index>``: ``sizes`` {dim: static size}, ``bounds``
    {dim: (low, high)} (high None: no upper check), ``strides`` {dim: static
    stride}; ``dtype`` or ``device`` None leaves that check out."""
    var = f"arg{index}_1"
    lines = [f"AOTI_NOINLINE static void check_input_{index}(",
             "    AtenTensorHandle* input_handles",
             ") {",
             f"    ConstantHandle {var} = ConstantHandle(input_handles[{index}]);"]
    if dtype is not None:
        call, name = DTYPES[dtype]
        lines += [
            f"    int32_t {var}_expected_dtype = {call};",
            f"    if ({var}_expected_dtype != {var}_dtype) {{",
            "        std::stringstream ss;",
            f'        ss << "input_handles[{index}]: unmatched dtype, "',
            f'           << "expected: " << {var}_expected_dtype << "(at::k{name}), "',
            f'           << "but got: " << {var}_dtype << "\\n";',
            "        throw std::runtime_error(std::move(ss).str());",
            "    }"]
    lines.append(f"    auto {var}_size = {var}.sizes();")
    for d, size in dict(sizes).items():
        lines += [
            f"    if ({size} != {var}_size[{d}]) {{",
            "        std::stringstream ss;",
            f'        ss << "input_handles[{index}]: unmatched dim value at {d}, "',
            f'           << "expected: {size}, " << "but got: " << {var}_size[{d}]',
            '           << "\\n";',
            "    }"]
    for d, (low, high) in dict(bounds).items():
        lines += [
            f"    if ({var}_size[{d}] < {low}) {{",
            "        std::stringstream ss;",
            f'        ss << "input_handles[{index}]: dim value is too small at {d}, "',
            f'           << "expected it to be >= {low}, " << "but got: "',
            "    }"]
        if high is not None:
            lines += [
                f"    if ({var}_size[{d}] > {high}) {{",
                "        std::stringstream ss;",
                f'        ss << "input_handles[{index}]: dim value is too large at {d}, "',
                f'           << "expected to be <= {high}, " << "but got: "',
                "    }"]
    for d, stride in dict(strides).items():
        lines += [
            f"    if ({stride} != {var}_stride[{d}]) {{",
            "        std::stringstream ss;",
            f'        ss << "input_handles[{index}]: unmatched stride value at {d}, "',
            f'           << "expected: {stride}, " << "but got: " << {var}_stride[{d}]',
            "    }"]
    if device is not None:
        lines += [
            f"    int32_t {var}_expected_device_type = {DEVICES[device]};",
            f"    if ({var}_expected_device_type != {var}_device_type) {{",
            "        std::stringstream ss;",
            f'        ss << "input_handles[{index}]: unmatched device type, "',
            f'        << "expected: " << {var}_expected_device_type << "{DEVICES[device]}({device}), "',
            f'        << "but got: " << {var}_device_type << "\\n";',
            "    }"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def run_impl(num_inputs, bindings=(), asserts=()):
    """``run_impl`` moving ``num_inputs`` inputs into ``argI_1``, binding
    ``bindings`` (lines such as ``int64_t s17 = arg0_1_size[0];``) and
    asserting ``asserts`` ((input, "s17, 8L", "8L, 1L") triples)."""
    lines = ["AOTInductorModel::run_impl(",
             "    AtenTensorHandle* input_handles,",
             "    AtenTensorHandle* output_handles,",
             "    DeviceStreamType stream,",
             "    AOTIProxyExecutorHandle proxy_executor",
             ") {",
             f"    auto inputs = steal_from_raw_handles_to_raii_handles(input_handles, "
             f"{num_inputs});"]
    lines += [f"    auto arg{i}_1 = std::move(inputs[{i}]);" for i in range(num_inputs)]
    lines += [f"    auto arg{i}_1_size = arg{i}_1.sizes();" for i in range(num_inputs)]
    lines += ["    " + line for line in bindings]
    lines.append("    inputs.clear();")
    for index, sizes, strides in asserts:
        lines.append(f"    if (_check_aoti_runtime_check_inputs_env()) {{ assert_size_stride("
                     f"arg{index}_1, {{{sizes}}}, {{{strides}}}, \"input\"); }}")
    lines.append("} // AOTInductorModel::run_impl")
    return "\n".join(lines) + "\n"


def write_library(folder, source, name="model.wrapper"):
    """Write ``source`` as ``<name>.cpp``; return the path of the ``.so``
    beside it (which need not exist: the readers only look at the source)."""
    (folder / f"{name}.cpp").write_text(source)
    return str(folder / f"{name}.so")
