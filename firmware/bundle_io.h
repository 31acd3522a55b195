// The bundle protocol's file handling for the C++ runners of Linux bundles (toolchain/bundle.py): the TVM runner
// (templates/tvm_runner.cpp.j2) and the ExecuTorch runner (firmware/executorch_runner.cpp); their main() is also
// the tuning kernel runner's (firmware/tvm_kernel_runner.cpp). Errors are exceptions
// whose message main() prints.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

namespace edgeyard {

// A count argument (SAMPLES, WARMUP, REPEAT): a non-negative integer.
inline long ParseCount(const char* text, const char* what) {
  char* end = nullptr;
  long value = std::strtol(text, &end, 10);
  if (*text == '\0' || *end != '\0' || value < 0) {
    throw std::runtime_error(std::string(what) + " must be a non-negative integer, not '" + text + "'");
  }
  return value;
}

// The whole file at `path`, which must hold exactly `expected_bytes`.
inline std::vector<char> ReadFile(const std::string& path, size_t expected_bytes) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) throw std::runtime_error("cannot open " + path);
  std::fseek(file, 0, SEEK_END);
  const long size = std::ftell(file);
  std::fseek(file, 0, SEEK_SET);
  std::vector<char> data(expected_bytes);
  const bool complete = size >= 0 && static_cast<size_t>(size) == expected_bytes &&
                        std::fread(data.data(), 1, expected_bytes, file) == expected_bytes;
  std::fclose(file);
  if (!complete) {
    throw std::runtime_error(path + " holds " + std::to_string(size) + " bytes; expected " +
                             std::to_string(expected_bytes));
  }
  return data;
}

inline void WriteFile(const std::string& path, const std::vector<char>& data) {
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) throw std::runtime_error("cannot create " + path);
  size_t written = std::fwrite(data.data(), 1, data.size(), file);
  if (std::fclose(file) != 0 || written != data.size()) throw std::runtime_error("cannot write " + path);
}

// The folder of the program (argv[0]): the bundle, where the model lies.
inline std::string BundleDir(const char* argv0) {
  std::string path(argv0);
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

// A runner's main(): run(argc, argv)'s status, or the error's message on stderr (after `program`: ) and 1.
inline int MainReportingErrors(const char* program, int (*run)(int, char**), int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "%s: %s\n", program, error.what());
    return 1;
  }
}

}  // namespace edgeyard
