// DeviceBuffer: a move-only owner of memory on one device, released through the backend that
// allocated it. Copying a buffer is explicit (Backend::copy), never an accident.
#pragma once

#include <cstddef>
#include <functional>
#include <utility>

namespace mirror {

class DeviceBuffer {
 public:
  using Release = std::function<void(void*, size_t num_bytes)>;

  DeviceBuffer() = default;
  DeviceBuffer(void* data, size_t num_bytes, Release release)
      : data_(data), num_bytes_(num_bytes), release_(std::move(release)) {}
  DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      reset();
      data_ = std::exchange(other.data_, nullptr);
      num_bytes_ = std::exchange(other.num_bytes_, 0);
      release_ = std::move(other.release_);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { reset(); }

  void reset() noexcept {
    if (data_ && release_) release_(data_, num_bytes_);
    data_ = nullptr;
    num_bytes_ = 0;
  }

  template <typename T = float>
  T* as() const { return static_cast<T*>(data_); }
  void* data() const { return data_; }
  size_t num_bytes() const { return num_bytes_; }
  template <typename T = float>
  size_t count() const { return num_bytes_ / sizeof(T); }

 private:
  void* data_ = nullptr;
  size_t num_bytes_ = 0;
  Release release_;
};

}  // namespace mirror
