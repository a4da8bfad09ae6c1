// prunec: base64 streams (a tensor's JSON form). Whole-buffer: encode on Finish, decode on InitPosition,
// with tvm-ffi's Base64Encode/Base64Decode doing the work.
#ifndef TVM_SUPPORT_BASE64_H_
#define TVM_SUPPORT_BASE64_H_

#include <tvm/ffi/extra/base64.h>
#include <tvm/support/io.h>

#include <string>

#include "bytes_io.h"

namespace tvm {
namespace support {

class Base64OutStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit Base64OutStream(Stream* sink) : sink_(sink) {}

  size_t Write(const void* ptr, size_t size) override {
    pending_.append(static_cast<const char*>(ptr), size);
    return size;
  }
  size_t Read(void*, size_t) override {
    TVM_FFI_THROW(InternalError) << "Base64OutStream is write-only";
    return 0;
  }
  void Finish() {
    ffi::String encoded = ffi::Base64Encode(TVMFFIByteArray{pending_.data(), pending_.size()});
    sink_->Write(encoded.data(), encoded.size());
    pending_.clear();
  }

 private:
  Stream* sink_;
  std::string pending_;
};

class Base64InStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit Base64InStream(Stream* source) : source_(source) {}

  void InitPosition() {
    std::string encoded;
    char chunk[4096];
    for (size_t n; (n = source_->Read(chunk, sizeof(chunk))) != 0;) encoded.append(chunk, n);
    ffi::Bytes bytes = ffi::Base64Decode(TVMFFIByteArray{encoded.data(), encoded.size()});
    decoded_.assign(bytes.data(), bytes.size());
    offset_ = 0;
  }
  size_t Read(void* ptr, size_t size) override {
    BytesInStream rest(decoded_.data() + offset_, decoded_.size() - offset_);
    size_t count = rest.Read(ptr, size);
    offset_ += count;
    return count;
  }
  size_t Write(const void*, size_t) override {
    TVM_FFI_THROW(InternalError) << "Base64InStream is read-only";
    return 0;
  }

 private:
  Stream* source_;
  std::string decoded_;
  size_t offset_ = 0;
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_BASE64_H_
