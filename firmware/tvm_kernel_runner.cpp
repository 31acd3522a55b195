// edgeyard's kernel runner for MetaSchedule tuning by instruction count (toolchain/backends/tvm/tuning.py):
// loads one tuning candidate (a shared library holding one TIR function, "main") and calls it CALLS times on
// zero-filled tensors, under qemu-user with the instruction-counting plugin. Counted with CALLS 1 and 9, the
// difference over 8 is one call's instructions, loading and start-up cancelling out.
//
// Usage: tvm_kernel_runner ./LIBRARY CALLS DTYPE:D0xD1x... ...   (DTYPE: float32, int8, uint8, int32, ...)
#include <dlpack/dlpack.h>
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include "bundle_io.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

namespace {

DLDataType ParseDtype(const std::string& name) {
  const struct { const char* prefix; uint8_t code; } kinds[] = {
      {"float", kDLFloat}, {"uint", kDLUInt}, {"int", kDLInt}, {"bfloat", kDLBfloat}};
  for (const auto& kind : kinds) {
    const std::string prefix = kind.prefix;
    if (name.compare(0, prefix.size(), prefix) == 0 && name.size() > prefix.size()) {
      return DLDataType{kind.code, static_cast<uint8_t>(std::stoi(name.substr(prefix.size()))), 1};
    }
  }
  throw std::runtime_error("unknown dtype '" + name + "'");
}

std::vector<int64_t> ParseShape(const std::string& text) {
  std::vector<int64_t> shape;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('x', start);
    if (end == std::string::npos) end = text.size();
    shape.push_back(std::stoll(text.substr(start, end - start)));
    start = end + 1;
  }
  return shape;
}

int Run(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s ./LIBRARY CALLS DTYPE:D0xD1x... ...\n", argv[0]);
    return 2;
  }
  const long calls = std::strtol(argv[2], nullptr, 10);
  ffi::Module library = ffi::Module::LoadFromFile(argv[1]);
  ffi::Optional<ffi::Function> found = library->GetFunction("main");
  if (!found.has_value()) throw std::runtime_error(std::string(argv[1]) + " has no function main");
  const ffi::Function function = *found;

  const ffi::Function alloc_tensor = ffi::Function::GetGlobalRequired("runtime.TVMTensorAllocWithScope");
  const ffi::Function copy_from_bytes = ffi::Function::GetGlobalRequired("runtime.TVMTensorCopyFromBytes");
  std::vector<ffi::Any> args;
  for (int i = 3; i < argc; ++i) {
    const std::string spec = argv[i];
    const size_t colon = spec.find(':');
    if (colon == std::string::npos) throw std::runtime_error("argument '" + spec + "' is not DTYPE:SHAPE");
    const DLDataType dtype = ParseDtype(spec.substr(0, colon));
    const std::vector<int64_t> shape = colon + 1 < spec.size() ? ParseShape(spec.substr(colon + 1))
                                                                : std::vector<int64_t>{};
    int64_t bytes = (dtype.bits + 7) / 8;
    for (int64_t dim : shape) bytes *= dim;
    ffi::Tensor tensor = alloc_tensor(ffi::Shape(shape), dtype, DLDevice{kDLCPU, 0}, nullptr).cast<ffi::Tensor>();
    std::vector<char> zeros(static_cast<size_t>(bytes), 0);  // the same contents every run: the same count
    copy_from_bytes(tensor, static_cast<void*>(zeros.data()), bytes);
    args.push_back(tensor);
  }
  std::vector<ffi::AnyView> views(args.begin(), args.end());
  for (long call = 0; call < calls; ++call) {
    ffi::Any result;
    function.CallPacked(views.data(), static_cast<int32_t>(views.size()), &result);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return edgeyard::MainReportingErrors("tvm_kernel_runner", Run, argc, argv); }
