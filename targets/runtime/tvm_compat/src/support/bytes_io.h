// prunec: streams over memory, used to (de)serialise the VM executable and constants.
#ifndef TVM_SUPPORT_BYTES_IO_H_
#define TVM_SUPPORT_BYTES_IO_H_

#include <tvm/ffi/error.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace tvm {
namespace support {

class BytesInStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  BytesInStream(const void* data, size_t size) : begin_(static_cast<const char*>(data)), size_(size) {}
  explicit BytesInStream(const ffi::Bytes& bytes) : BytesInStream(bytes.data(), bytes.size()) {}
  explicit BytesInStream(const std::string& text) : BytesInStream(text.data(), text.size()) {}

  size_t Read(void* ptr, size_t size) override {
    size_t count = std::min(size, size_ - offset_);
    if (count) std::memcpy(ptr, begin_ + offset_, count);
    offset_ += count;
    return count;
  }
  size_t Write(const void*, size_t) override {
    TVM_FFI_THROW(InternalError) << "BytesInStream is read-only";
    return 0;
  }

 private:
  const char* begin_;
  size_t size_;
  size_t offset_ = 0;
};

class BytesOutStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit BytesOutStream(std::string* sink) : sink_(sink) {}

  size_t Write(const void* ptr, size_t size) override {
    sink_->append(static_cast<const char*>(ptr), size);
    return size;
  }
  size_t Read(void*, size_t) override {
    TVM_FFI_THROW(InternalError) << "BytesOutStream is write-only";
    return 0;
  }

 private:
  std::string* sink_;
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_BYTES_IO_H_
