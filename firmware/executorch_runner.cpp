// The executorch backend's bundle runner: runs model.pte (an ExecuTorch program lowered with the XNNPACK
// partitioner) through libexecutorch's Module API, without Python or libtorch on the board.
//
// Usage: ./runner IN_DIR OUT_DIR SAMPLES WARMUP REPEAT   (the bundle protocol, toolchain/bundle.py)
//   IN_DIR/input<i>.bin   SAMPLES raw tensors per input of the program's "forward", back to back
//   OUT_DIR/output<j>.bin SAMPLES raw tensors per output, back to back
//   OUT_DIR/timings_ns.txt when REPEAT > 0: nanoseconds of each timed inference of sample 0
//   EDGEYARD_THREADS      XNNPACK's threads (default 1)
//
// The program describes its own tensors (shapes, dtypes, sizes), so the runner is the same for every model.
// The kernels and the XNNPACK delegate register themselves in static initializers of
// libexecutorch_kernels_optimized.so and libexecutorch_backend_xnnpack.so: the link keeps them (--no-as-needed).
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/extension/threadpool/threadpool_guard.h>
#include <executorch/runtime/platform/platform.h>
#include <executorch/runtime/platform/runtime.h>

#include "bundle_io.h"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

// libexecutorch_threadpool.so's pool, which XNNPACK runs on. Its header (extension/threadpool/threadpool.h)
// is not in the wheel, as it includes pthreadpool.h, which is not either; these two members are all the runner uses.
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  bool _unsafe_reset_threadpool(uint32_t thread_count);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

// ExecuTorch's log sink, in place of libexecutorch's weak default (the link exports this one): errors only, and
// without the default's timestamp, whose digits would change the instructions a counted run executes.
extern "C" void et_pal_emit_log_message(et_timestamp_t, et_pal_log_level_t level, const char* filename, const char*,
                                        size_t line, const char* message, size_t length) {
  if (level == kError || level == kFatal) {
    std::fprintf(stderr, "executorch: %s:%zu: %.*s\n", filename, line, static_cast<int>(length), message);
  }
}

namespace {

using executorch::extension::Module;
using executorch::runtime::Error;
using executorch::runtime::EValue;
using executorch::runtime::TensorInfo;
using edgeyard::BundleDir;
using edgeyard::ParseCount;
using edgeyard::ReadFile;
using edgeyard::WriteFile;

constexpr const char* kMethod = "forward";

struct TensorSpec {
  std::vector<executorch::aten::SizesType> sizes;
  executorch::aten::ScalarType dtype;
  size_t bytes;  // of one sample
};

void Check(Error error, const std::string& what) {
  if (error != Error::Ok) {
    throw std::runtime_error(what + " failed (ExecuTorch error " + std::to_string(static_cast<int>(error)) + ")");
  }
}

TensorSpec Spec(executorch::runtime::Result<TensorInfo> info, const std::string& what) {
  Check(info.error(), "reading the tensor description of " + what);
  const auto sizes = info->sizes();
  return {std::vector<executorch::aten::SizesType>(sizes.begin(), sizes.end()), info->scalar_type(), info->nbytes()};
}

unsigned Threads() {
  const char* text = std::getenv("EDGEYARD_THREADS");
  return text == nullptr || *text == '\0' ? 1 : static_cast<unsigned>(ParseCount(text, "EDGEYARD_THREADS"));
}

int Run(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s IN_DIR OUT_DIR SAMPLES WARMUP REPEAT\n", argv[0]);
    return 2;
  }
  const std::string in_dir = argv[1];
  const std::string out_dir = argv[2];
  const long samples = ParseCount(argv[3], "SAMPLES");
  const long warmup = ParseCount(argv[4], "WARMUP");
  const long repeat = ParseCount(argv[5], "REPEAT");
  if (samples == 0) throw std::runtime_error("SAMPLES must be at least 1");

  executorch::runtime::runtime_init();
  // On one thread XNNPACK runs on this one and the pool never starts: it would start one thread per core first,
  // whose spinning varies the instructions a counted run executes.
  std::optional<executorch::extension::threadpool::NoThreadPoolGuard> single_thread;
  const unsigned threads = Threads();
  if (threads == 1) {
    single_thread.emplace();
  } else {
    executorch::extension::threadpool::get_threadpool()->_unsafe_reset_threadpool(threads);
  }
  Module module(BundleDir(argv[0]) + "/model.pte", Module::LoadMode::File);
  Check(module.load_method(kMethod), "loading model.pte's method forward");
  auto meta = module.method_meta(kMethod);
  Check(meta.error(), "reading model.pte's method forward");

  std::vector<TensorSpec> inputs, outputs;
  std::vector<std::vector<char>> input_data;
  for (size_t i = 0; i < meta->num_inputs(); ++i) {
    inputs.push_back(Spec(meta->input_tensor_meta(i), "input " + std::to_string(i)));
    input_data.push_back(ReadFile(in_dir + "/input" + std::to_string(i) + ".bin", samples * inputs[i].bytes));
  }
  for (size_t j = 0; j < meta->num_outputs(); ++j) {
    outputs.push_back(Spec(meta->output_tensor_meta(j), "output " + std::to_string(j)));
  }

  // The tensors wrap the input buffers (no copy); `infer` runs one sample.
  auto infer = [&](long sample) {
    std::vector<executorch::extension::TensorPtr> tensors;
    std::vector<EValue> values;
    for (size_t i = 0; i < inputs.size(); ++i) {
      tensors.push_back(executorch::extension::from_blob(input_data[i].data() + sample * inputs[i].bytes,
                                                         inputs[i].sizes, inputs[i].dtype));
      values.emplace_back(*tensors.back());
    }
    auto result = module.execute(kMethod, values);
    Check(result.error(), "running model.pte");
    return std::move(*result);
  };

  std::vector<std::vector<char>> output_data(outputs.size());
  for (size_t j = 0; j < outputs.size(); ++j) output_data[j].resize(samples * outputs[j].bytes);
  for (long sample = 0; sample < samples; ++sample) {
    const std::vector<EValue> results = infer(sample);
    if (results.size() != outputs.size()) {
      throw std::runtime_error("model.pte returned " + std::to_string(results.size()) + " outputs; expected " +
                               std::to_string(outputs.size()));
    }
    for (size_t j = 0; j < outputs.size(); ++j) {
      if (!results[j].isTensor() || results[j].toTensor().nbytes() != outputs[j].bytes) {
        throw std::runtime_error("output " + std::to_string(j) + " is not the tensor model.pte describes");
      }
      const char* bytes = static_cast<const char*>(results[j].toTensor().const_data_ptr());
      std::copy(bytes, bytes + outputs[j].bytes, output_data[j].begin() + sample * outputs[j].bytes);
    }
  }
  for (size_t j = 0; j < outputs.size(); ++j) {
    WriteFile(out_dir + "/output" + std::to_string(j) + ".bin", output_data[j]);
  }

  if (repeat > 0) {
    for (long w = 0; w < warmup; ++w) infer(0);
    std::string timings;
    for (long r = 0; r < repeat; ++r) {
      auto start = std::chrono::steady_clock::now();
      infer(0);
      auto stop = std::chrono::steady_clock::now();
      timings += std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(stop - start).count()) + "\n";
    }
    WriteFile(out_dir + "/timings_ns.txt", std::vector<char>(timings.begin(), timings.end()));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return edgeyard::MainReportingErrors("runner", Run, argc, argv); }
