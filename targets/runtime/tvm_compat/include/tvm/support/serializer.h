// prunec: Serializer<T> for the types the TVM runtime reads and writes. The layout must match what
// TVM's compiler wrote into model.so: arithmetic values little-endian, every sequence (string,
// vector, Array, Map, unordered_map) a uint64 count then its items, DLDataType (u8 code, u8 bits,
// u16 lanes), DLDevice (i32 type, i32 id). Types with their own layout (FunctionInfo, VMFuncInfo, ...)
// specialise Serializer in TVM's sources.
#ifndef TVM_SUPPORT_SERIALIZER_H_
#define TVM_SUPPORT_SERIALIZER_H_

#include <dlpack/dlpack.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/endian.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tvm {
namespace support {

template <typename T>
struct Serializer<T, std::enable_if_t<std::is_arithmetic_v<T>>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const T& value) {
    T copy = value;
    if constexpr (!TVM_FFI_IO_NO_ENDIAN_SWAP) ffi::ByteSwap(&copy, sizeof(T), 1);
    strm->Write(static_cast<const void*>(&copy), sizeof(T));
  }
  static bool Read(Stream* strm, T* value) {
    bool complete = strm->Read(static_cast<void*>(value), sizeof(T)) == sizeof(T);
    if constexpr (!TVM_FFI_IO_NO_ENDIAN_SWAP) ffi::ByteSwap(value, sizeof(T), 1);
    return complete;
  }
};

template <typename T>
struct Serializer<T, std::enable_if_t<std::is_enum_v<T>>> {
  static constexpr bool enabled = true;
  using Underlying = std::underlying_type_t<T>;
  static void Write(Stream* strm, const T& value) {
    Serializer<Underlying>::Write(strm, static_cast<Underlying>(value));
  }
  static bool Read(Stream* strm, T* value) {
    Underlying raw;
    if (!Serializer<Underlying>::Read(strm, &raw)) return false;
    *value = static_cast<T>(raw);
    return true;
  }
};

namespace detail {
inline void WriteCount(Stream* strm, size_t count) {
  Serializer<uint64_t>::Write(strm, static_cast<uint64_t>(count));
}
inline bool ReadCount(Stream* strm, uint64_t* count) { return Serializer<uint64_t>::Read(strm, count); }
inline void WriteChars(Stream* strm, const char* data, size_t size) {
  WriteCount(strm, size);
  if (size) strm->Write(static_cast<const void*>(data), size);
}
}  // namespace detail

template <>
struct Serializer<std::string> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::string& text) { detail::WriteChars(strm, text.data(), text.size()); }
  static bool Read(Stream* strm, std::string* text) {
    uint64_t size;
    if (!detail::ReadCount(strm, &size)) return false;
    text->resize(static_cast<size_t>(size));
    return size == 0 || strm->Read(static_cast<void*>(text->data()), text->size()) == text->size();
  }
};

template <>
struct Serializer<ffi::String> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::String& text) { detail::WriteChars(strm, text.data(), text.size()); }
  static bool Read(Stream* strm, ffi::String* text) {
    std::string buffer;
    if (!Serializer<std::string>::Read(strm, &buffer)) return false;
    *text = ffi::String(std::move(buffer));
    return true;
  }
};

template <typename T>
struct Serializer<std::vector<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::vector<T>& items) {
    detail::WriteCount(strm, items.size());
    for (const T& item : items) Serializer<T>::Write(strm, item);
  }
  static bool Read(Stream* strm, std::vector<T>* items) {
    uint64_t size;
    if (!detail::ReadCount(strm, &size)) return false;
    items->resize(static_cast<size_t>(size));
    for (T& item : *items) {
      if (!Serializer<T>::Read(strm, &item)) return false;
    }
    return true;
  }
};

template <typename A, typename B>
struct Serializer<std::pair<A, B>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::pair<A, B>& pair) {
    Serializer<A>::Write(strm, pair.first);
    Serializer<B>::Write(strm, pair.second);
  }
  static bool Read(Stream* strm, std::pair<A, B>* pair) {
    return Serializer<A>::Read(strm, &pair->first) && Serializer<B>::Read(strm, &pair->second);
  }
};

template <typename K, typename V>
struct Serializer<std::unordered_map<K, V>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::unordered_map<K, V>& map) {
    Serializer<std::vector<std::pair<K, V>>>::Write(strm, std::vector<std::pair<K, V>>(map.begin(), map.end()));
  }
  static bool Read(Stream* strm, std::unordered_map<K, V>* map) {
    std::vector<std::pair<K, V>> pairs;
    if (!Serializer<std::vector<std::pair<K, V>>>::Read(strm, &pairs)) return false;
    map->clear();
    map->insert(pairs.begin(), pairs.end());
    return true;
  }
};

template <typename T>
struct Serializer<ffi::Array<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::Array<T>& items) {
    detail::WriteCount(strm, items.size());
    for (const T& item : items) Serializer<T>::Write(strm, item);
  }
  static bool Read(Stream* strm, ffi::Array<T>* items) {
    uint64_t size;
    if (!detail::ReadCount(strm, &size)) return false;
    ffi::Array<T> result;
    for (uint64_t i = 0; i < size; ++i) {
      T item;
      if (!Serializer<T>::Read(strm, &item)) return false;
      result.push_back(std::move(item));
    }
    *items = std::move(result);
    return true;
  }
};

template <typename K, typename V>
struct Serializer<ffi::Map<K, V>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::Map<K, V>& map) {
    detail::WriteCount(strm, map.size());
    for (const auto& [key, value] : map) {
      Serializer<K>::Write(strm, key);
      Serializer<V>::Write(strm, value);
    }
  }
  static bool Read(Stream* strm, ffi::Map<K, V>* map) {
    uint64_t size;
    if (!detail::ReadCount(strm, &size)) return false;
    ffi::Map<K, V> result;
    for (uint64_t i = 0; i < size; ++i) {
      K key;
      V value;
      if (!Serializer<K>::Read(strm, &key) || !Serializer<V>::Read(strm, &value)) return false;
      result.Set(std::move(key), std::move(value));
    }
    *map = std::move(result);
    return true;
  }
};

template <>
struct Serializer<DLDataType> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const DLDataType& dtype) {
    Serializer<uint8_t>::Write(strm, dtype.code);
    Serializer<uint8_t>::Write(strm, dtype.bits);
    Serializer<uint16_t>::Write(strm, dtype.lanes);
  }
  static bool Read(Stream* strm, DLDataType* dtype) {
    return Serializer<uint8_t>::Read(strm, &dtype->code) && Serializer<uint8_t>::Read(strm, &dtype->bits) &&
           Serializer<uint16_t>::Read(strm, &dtype->lanes);
  }
};

template <>
struct Serializer<DLDevice> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const DLDevice& device) {
    Serializer<int32_t>::Write(strm, static_cast<int32_t>(device.device_type));
    Serializer<int32_t>::Write(strm, device.device_id);
  }
  static bool Read(Stream* strm, DLDevice* device) {
    int32_t type;
    if (!Serializer<int32_t>::Read(strm, &type) || !Serializer<int32_t>::Read(strm, &device->device_id)) return false;
    device->device_type = static_cast<DLDeviceType>(type);
    return true;
  }
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_SERIALIZER_H_
