// prunec TVM runner: loads a Relax VM shared library exported by `prunec compile --backend tvm`,
// feeds it .npy inputs, runs `main`, writes the outputs as .npy files and optionally times repeats.
//
//   runner MODEL.so OUT_DIR [--repeat N] [--warmup W] IN0.npy [IN1.npy ...]
//
// Writes OUT_DIR/out_<i>.npy for each (flattened) output and prints one JSON line on stdout:
//   {"outputs": K, "times_ms": [...]}
// It only uses the tvm-ffi C++ API, so it builds against the headers of the apache-tvm-ffi wheel and
// links against libtvm_ffi.so + libtvm_runtime.so of the target architecture (host or cross).
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <new>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

namespace {

struct CPUAlloc {
  // TVM's kernels assume 64-byte aligned buffers (kAllocAlignment) and emit aligned vector loads;
  // malloc guarantees only 8 bytes on 32-bit ARM, where a misaligned input is a bus error.
  void AllocData(DLTensor* t) {
    if (posix_memalign(&t->data, kAlignment, ffi::GetDataSize(*t) + kAlignment) != 0) throw std::bad_alloc();
  }
  static constexpr size_t kAlignment = 64;
  void FreeData(DLTensor* t) { std::free(t->data); }
};

struct DTypeName {
  const char* npy;  // numpy descr without the byte-order char
  DLDataType dl;
};

// The dtypes a prunec model exchanges at its boundary; extend here if a model needs more.
const DTypeName kDTypes[] = {
    {"f4", {kDLFloat, 32, 1}}, {"f8", {kDLFloat, 64, 1}}, {"f2", {kDLFloat, 16, 1}},
    {"i8", {kDLInt, 64, 1}},   {"i4", {kDLInt, 32, 1}},   {"i2", {kDLInt, 16, 1}},
    {"i1", {kDLInt, 8, 1}},    {"u1", {kDLUInt, 8, 1}},   {"b1", {kDLBool, 8, 1}},
};

DLDataType ParseDescr(const std::string& descr) {
  // descr like '<f4', '|u1'; big-endian arrays are rejected (the targets are all little-endian).
  if (descr.size() < 3 || descr[0] == '>') throw std::runtime_error("unsupported npy dtype " + descr);
  std::string body = descr.substr(1);
  for (const auto& d : kDTypes)
    if (body == d.npy) return d.dl;
  throw std::runtime_error("unsupported npy dtype " + descr);
}

std::string DescrOf(DLDataType dt) {
  for (const auto& d : kDTypes)
    if (d.dl.code == dt.code && d.dl.bits == dt.bits && d.dl.lanes == dt.lanes)
      return std::string(dt.bits == 8 ? "|" : "<") + d.npy;
  throw std::runtime_error("output dtype has no npy equivalent");
}

std::string HeaderValue(const std::string& header, const std::string& key) {
  size_t k = header.find("'" + key + "'");
  if (k == std::string::npos) throw std::runtime_error("npy header lacks " + key);
  size_t colon = header.find(':', k);
  size_t start = header.find_first_not_of(' ', colon + 1);
  if (header[start] == '(') return header.substr(start + 1, header.find(')', start) - start - 1);
  if (header[start] == '\'') return header.substr(start + 1, header.find('\'', start + 1) - start - 1);
  return header.substr(start, header.find_first_of(",}", start) - start);
}

ffi::Tensor ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  char magic[8];
  in.read(magic, 8);
  if (std::memcmp(magic, "\x93NUMPY", 6) != 0) throw std::runtime_error(path + " is not a .npy file");
  uint32_t header_len = 0;
  if (magic[6] == 1) {
    uint16_t len16;
    in.read(reinterpret_cast<char*>(&len16), 2);
    header_len = len16;
  } else {
    in.read(reinterpret_cast<char*>(&header_len), 4);
  }
  std::string header(header_len, '\0');
  in.read(&header[0], header_len);
  if (HeaderValue(header, "fortran_order") != "False")
    throw std::runtime_error(path + ": Fortran-ordered arrays are not supported");
  DLDataType dtype = ParseDescr(HeaderValue(header, "descr"));
  std::vector<int64_t> shape;
  std::stringstream dims(HeaderValue(header, "shape"));
  for (std::string item; std::getline(dims, item, ',');)
    if (item.find_first_not_of(' ') != std::string::npos) shape.push_back(std::stoll(item));
  ffi::Tensor t = ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::ShapeView(shape.data(), shape.size()), dtype,
                                           DLDevice{kDLCPU, 0});
  size_t nbytes = ffi::GetDataSize(*t.GetDLTensorPtr());
  in.read(static_cast<char*>(t.GetDLTensorPtr()->data), static_cast<std::streamsize>(nbytes));
  if (static_cast<size_t>(in.gcount()) != nbytes) throw std::runtime_error(path + " is truncated");
  return t;
}

void WriteNpy(const std::string& path, const ffi::Tensor& tensor) {
  const DLTensor* t = tensor.GetDLTensorPtr();
  std::ostringstream shape;
  shape << "(";
  for (int i = 0; i < t->ndim; ++i) shape << t->shape[i] << (t->ndim == 1 || i + 1 < t->ndim ? "," : "");
  shape << ")";
  std::string header = "{'descr': '" + DescrOf(t->dtype) + "', 'fortran_order': False, 'shape': " +
                       shape.str() + ", }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary);
  uint16_t len = static_cast<uint16_t>(header.size());
  out.write("\x93NUMPY\x01\x00", 8);
  out.write(reinterpret_cast<const char*>(&len), 2);
  out.write(header.data(), header.size());
  const char* data = static_cast<const char*>(t->data) + t->byte_offset;
  out.write(data, static_cast<std::streamsize>(ffi::GetDataSize(*t)));
  if (!out) throw std::runtime_error("cannot write " + path);
}

// A Relax function returns a tensor or a (nested) tuple of them; flatten depth-first, like
// torch.utils._pytree flattens the PyTorch outputs.
void Flatten(const ffi::Any& value, std::vector<ffi::Tensor>* out) {
  if (auto t = value.as<ffi::Tensor>()) {
    out->push_back(*t);
  } else if (auto arr = value.as<ffi::Array<ffi::Any>>()) {
    for (const ffi::Any& item : *arr) Flatten(item, out);
  } else {
    throw std::runtime_error("model returned a value that is neither a tensor nor a tuple");
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc < 3) {
      std::cerr << "usage: runner MODEL.so OUT_DIR [--repeat N] [--warmup W] IN0.npy [IN1.npy ...]\n";
      return 2;
    }
    std::string lib = argv[1], out_dir = argv[2];
    int repeat = 0, warmup = 0;
    std::vector<ffi::Any> args;
    for (int i = 3; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "--repeat" && i + 1 < argc) {
        repeat = std::atoi(argv[++i]);
      } else if (a == "--warmup" && i + 1 < argc) {
        warmup = std::atoi(argv[++i]);
      } else {
        args.push_back(ReadNpy(a));
      }
    }
    ffi::Module mod = ffi::Module::LoadFromFile(lib);
    ffi::Module vm = mod->GetFunction("vm_load_executable", true).value()().cast<ffi::Module>();
    // (device type, device id, allocator): CPU 0, pooled allocator (2) as tvm.relax.VirtualMachine does.
    vm->GetFunction("vm_initialization", true).value()(static_cast<int>(kDLCPU), 0, 2);
    ffi::Function main_fn = vm->GetFunction("main", true).value();
    std::vector<ffi::AnyView> views(args.begin(), args.end());
    auto call = [&]() {
      ffi::Any out;
      main_fn.CallPacked(views.data(), static_cast<int32_t>(views.size()), &out);
      return out;
    };

    ffi::Any result;
    std::vector<double> times_ms;
    result = call();  // first run: the outputs written below
    for (int i = 0; i < warmup; ++i) call();
    for (int i = 0; i < repeat; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      call();
      auto t1 = std::chrono::steady_clock::now();
      times_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    std::vector<ffi::Tensor> outs;
    Flatten(result, &outs);
    for (size_t i = 0; i < outs.size(); ++i) WriteNpy(out_dir + "/out_" + std::to_string(i) + ".npy", outs[i]);
    std::cout << "{\"outputs\": " << outs.size() << ", \"times_ms\": [";
    for (size_t i = 0; i < times_ms.size(); ++i) std::cout << (i ? ", " : "") << times_ms[i];
    std::cout << "]}" << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "runner: " << e.what() << std::endl;
    return 1;
  }
}
