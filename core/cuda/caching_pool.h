// The caching logic behind keel's CUDA allocators, free of CUDA headers so it
// can be tested on any machine with a fake backend (tests/cuda/).
//
// Device memory is taken from the backend in segments and handed out as
// blocks carved from them:
//   - every request is rounded up to a multiple of 512 bytes;
//   - requests up to 1 MiB ("small") come from 2 MiB segments, split as needed;
//   - larger requests get a segment rounded up to a multiple of 2 MiB, whose
//     tail is split off as a free block when it is over 1 MiB (so that a
//     large request can use it).
// A freed block goes back on the free list of the (device, stream) it was
// allocated on, merged with free neighbours in its segment, and the next
// request on that stream reuses it (best fit) without calling the backend.
//
// Why reuse is safe without synchronising: work on one stream runs in order,
// so a kernel enqueued after the free can only run after every kernel that
// used the block before it. A block that was also used on another stream must
// be noted with note_stream_use(ptr, stream): when it is freed, an event is
// recorded on each such stream and the block returns to its free list only
// once they have all completed.
//
// Out of memory: the pool first releases every cached segment that is wholly
// free (on every stream of the device) and waits for pending events, then
// retries once; if that fails too it throws keel::Error naming the request,
// what the pool holds (in use and cached) and what the device has free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "core/error.h"

namespace keel::cuda {

struct MemoryStats {
  size_t allocated = 0;         // bytes in live blocks (rounded sizes)
  size_t requested = 0;         // bytes asked for by the live allocations
  size_t reserved = 0;          // bytes held from the device (all segments)
  size_t peak_allocated = 0;    // high-water mark of `allocated`
  size_t peak_reserved = 0;     // high-water mark of `reserved`
  uint64_t segment_allocs = 0;  // backend allocations (cudaMalloc) that succeeded
  uint64_t segment_frees = 0;   // backend frees (cudaFree)
  uint64_t cache_hits = 0;      // allocations served from a free list
  uint64_t oom_retries = 0;     // times the cache was flushed to retry an allocation
  size_t cached() const { return reserved - allocated; }  // free bytes kept for reuse
};

// Human-readable byte counts for messages: "1.50 GiB (1610612736 bytes)".
inline std::string format_bytes(size_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = double(n);
  int u = 0;
  while (v >= 1024.0 && u < 6) v /= 1024.0, ++u;
  char buf[64];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%zu bytes", n);
  else
    std::snprintf(buf, sizeof buf, "%.2f %s (%zu bytes)", v, units[u], n);
  return buf;
}

// What the pool needs from the device. Streams and events are opaque handles
// (cudaStream_t / cudaEvent_t in the CUDA backend).
class PoolBackend {
 public:
  virtual ~PoolBackend() = default;
  // nullptr when the device is out of memory; other failures throw.
  virtual void* raw_alloc(int device, size_t nbytes) = 0;
  virtual void raw_free(int device, void* ptr) = 0;
  // (free, total) bytes of the device, for the out-of-memory message.
  virtual std::pair<size_t, size_t> device_memory(int device) = 0;
  // An event recorded now on `stream`.
  virtual void* record_event(void* stream) = 0;
  virtual bool event_done(void* event) = 0;               // non-blocking
  virtual void event_wait(void* event) = 0;               // blocks the host
  virtual void event_release(void* event) = 0;            // the handle may be reused
  virtual const char* name() const = 0;                   // "CUDA", "pinned host"
  virtual std::string device_name(int device) const = 0;  // "cuda:0"
};

class CachingPool {
 public:
  static constexpr size_t kRound = 512;
  static constexpr size_t kSmallLimit = size_t(1) << 20;    // 1 MiB
  static constexpr size_t kSmallSegment = size_t(2) << 20;  // 2 MiB
  static constexpr size_t kLargeRound = size_t(2) << 20;    // 2 MiB

  explicit CachingPool(PoolBackend& backend) : backend_(backend) {}
  // Returns every segment to the backend. Only for pools whose users are all
  // gone (tests); keel's global pools live for the whole process.
  ~CachingPool() {
    std::lock_guard<std::mutex> lock(mu_);
    try {
      for (auto& [block, events] : pending_)
        for (void* e : events) backend_.event_wait(e), backend_.event_release(e);
    } catch (...) {
    }
    std::set<Block*> all;
    for (auto& [p, b] : live_) all.insert(segment_head(b));
    for (Block* b : small_free_) all.insert(segment_head(b));
    for (Block* b : large_free_) all.insert(segment_head(b));
    for (auto& [b, e] : pending_) all.insert(segment_head(b));
    for (Block* head : all) {
      try {
        backend_.raw_free(head->device, head->ptr);
      } catch (...) {
      }
      for (Block* b = head; b;) {
        Block* next = b->next;
        delete b;
        b = next;
      }
    }
  }
  CachingPool(const CachingPool&) = delete;
  CachingPool& operator=(const CachingPool&) = delete;

  void* allocate(int device, void* stream, size_t nbytes) {
    std::lock_guard<std::mutex> lock(mu_);
    KEEL_CHECK(nbytes <= (size_t(1) << 62), backend_.name(), " allocator: request of ",
               format_bytes(nbytes), " on ", backend_.device_name(device), " is too large");
    process_events(/*wait=*/false);
    const size_t size = round_size(nbytes);
    const bool small = size <= kSmallLimit;
    Block* b = take_free(device, stream, size, small);
    if (b) {
      stats_[device].cache_hits++;
    } else {
      const size_t seg = small ? kSmallSegment : round_up(size, kLargeRound);
      void* p = backend_.raw_alloc(device, seg);
      if (!p) {
        stats_[device].oom_retries++;
        process_events(/*wait=*/true);
        release_cached(device);
        p = backend_.raw_alloc(device, seg);
      }
      if (!p) throw_oom(device, nbytes, seg);
      b = new Block(device, stream, static_cast<char*>(p), seg, small);
      MemoryStats& s = stats_[device];
      s.reserved += seg;
      s.segment_allocs++;
      s.peak_reserved = std::max(s.peak_reserved, s.reserved);
    }
    split(b, size);
    b->state = State::kLive;
    b->requested = nbytes;
    live_[b->ptr] = b;
    MemoryStats& s = stats_[device];
    s.allocated += b->size;
    s.requested += nbytes;
    s.peak_allocated = std::max(s.peak_allocated, s.allocated);
    return b->ptr;
  }

  // Called from destructors: never throws. An unknown pointer is a bug in
  // keel (a double free or a foreign pointer) and aborts.
  void deallocate(void* ptr) noexcept {
    if (!ptr) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(static_cast<char*>(ptr));
    if (it == live_.end()) {
      std::fprintf(stderr, "keel: %s allocator asked to free %p, which it did not allocate\n",
                   backend_.name(), ptr);
      std::terminate();
    }
    Block* b = it->second;
    live_.erase(it);
    MemoryStats& s = stats_[b->device];
    s.allocated -= b->size;
    s.requested -= b->requested;
    std::vector<void*> events;
    try {
      for (void* st : b->use_streams) events.push_back(backend_.record_event(st));
    } catch (...) {
      // No event could be recorded: wait for those already recorded and keep
      // the block out of circulation (leaked) rather than risk reusing it
      // while another stream still reads it.
      for (void* e : events) {
        try {
          backend_.event_wait(e);
          backend_.event_release(e);
        } catch (...) {
        }
      }
      b->state = State::kLost;
      return;
    }
    b->use_streams.clear();
    if (events.empty()) {
      release(b);
    } else {
      b->state = State::kPending;
      pending_.emplace_back(b, std::move(events));
    }
  }

  // Records that the live allocation containing `ptr` is used on `stream`
  // (besides the stream it was allocated on); see the file comment.
  void note_stream_use(const void* ptr, void* stream) {
    std::lock_guard<std::mutex> lock(mu_);
    Block* b = find_live(ptr);
    KEEL_CHECK(b != nullptr, backend_.name(), " allocator: note_stream_use on ", ptr,
               ", which is not a live allocation of this allocator");
    if (stream == b->stream) return;
    for (void* s : b->use_streams)
      if (s == stream) return;
    b->use_streams.push_back(stream);
  }

  // True when ptr lies inside a live allocation of this pool.
  bool owns(const void* ptr) const {
    std::lock_guard<std::mutex> lock(mu_);
    return find_live(ptr) != nullptr;
  }

  // Returns every wholly free cached segment of `device` (all devices when
  // device < 0) to the backend, after waiting for blocks still pending on
  // other streams. Returns the bytes released.
  size_t empty_cache(int device) {
    std::lock_guard<std::mutex> lock(mu_);
    process_events(/*wait=*/true);
    return release_cached(device);
  }

  MemoryStats stats(int device) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = stats_.find(device);
    return it == stats_.end() ? MemoryStats{} : it->second;
  }

  void reset_peaks(int device) {
    std::lock_guard<std::mutex> lock(mu_);
    MemoryStats& s = stats_[device];
    s.peak_allocated = s.allocated;
    s.peak_reserved = s.reserved;
  }

  static size_t round_size(size_t n) { return n == 0 ? kRound : round_up(n, kRound); }

 private:
  enum class State : uint8_t { kFree, kLive, kPending, kLost };

  struct Block {
    Block(int device_, void* stream_, char* ptr_, size_t size_, bool small_)
        : device(device_), stream(stream_), ptr(ptr_), size(size_), small(small_) {}
    int device;
    void* stream;
    char* ptr;
    size_t size;
    bool small;
    State state = State::kFree;
    size_t requested = 0;
    Block* prev = nullptr;  // neighbours inside one segment, in address order
    Block* next = nullptr;
    std::vector<void*> use_streams;  // other streams noted by note_stream_use
  };

  // Free lists ordered by (device, stream, size, address): lower_bound on a
  // key finds the best fit on that stream.
  struct BySize {
    bool operator()(const Block* a, const Block* b) const {
      return std::tie(a->device, a->stream, a->size, a->ptr) <
             std::tie(b->device, b->stream, b->size, b->ptr);
    }
  };
  using FreeList = std::set<Block*, BySize>;

  static size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

  static Block* segment_head(Block* b) {
    while (b->prev) b = b->prev;
    return b;
  }

  FreeList& list_for(const Block* b) { return b->small ? small_free_ : large_free_; }

  Block* find_live(const void* ptr) const {
    const char* p = static_cast<const char*>(ptr);
    auto it = live_.upper_bound(const_cast<char*>(p));
    if (it == live_.begin()) return nullptr;
    --it;
    Block* b = it->second;
    return p < b->ptr + b->size ? b : nullptr;
  }

  Block* take_free(int device, void* stream, size_t size, bool small) {
    FreeList& list = small ? small_free_ : large_free_;
    Block key(device, stream, nullptr, size, small);
    auto it = list.lower_bound(&key);
    if (it == list.end() || (*it)->device != device || (*it)->stream != stream) return nullptr;
    Block* b = *it;
    list.erase(it);
    return b;
  }

  // Cuts b down to `size`, putting the remainder on the free list when it is
  // worth keeping as a block of its own.
  void split(Block* b, size_t size) {
    const size_t rest = b->size - size;
    if (b->small ? rest < kRound : rest <= kSmallLimit) return;
    Block* r = new Block(b->device, b->stream, b->ptr + size, rest, b->small);
    r->prev = b;
    r->next = b->next;
    if (b->next) b->next->prev = r;
    b->next = r;
    b->size = size;
    list_for(r).insert(r);
  }

  // Puts a block that nothing uses any more on its free list, merged with
  // free neighbours.
  void release(Block* b) {
    b->state = State::kFree;
    FreeList& list = list_for(b);
    if (b->prev && b->prev->state == State::kFree) {
      Block* p = b->prev;
      list.erase(p);
      p->size += b->size;
      p->next = b->next;
      if (b->next) b->next->prev = p;
      delete b;
      b = p;
    }
    if (b->next && b->next->state == State::kFree) {
      Block* n = b->next;
      list.erase(n);
      b->size += n->size;
      b->next = n->next;
      if (n->next) n->next->prev = b;
      delete n;
    }
    list.insert(b);
  }

  // Moves pending blocks whose events have all completed back to their free
  // lists; with wait, blocks until every pending block is released.
  void process_events(bool wait) {
    for (size_t i = 0; i < pending_.size();) {
      auto& [b, events] = pending_[i];
      bool done = true;
      for (void* e : events) {
        if (wait)
          backend_.event_wait(e);
        else if (!backend_.event_done(e)) {
          done = false;
          break;
        }
      }
      if (!done) {
        ++i;
        continue;
      }
      for (void* e : events) backend_.event_release(e);
      Block* blk = b;
      pending_.erase(pending_.begin() + std::ptrdiff_t(i));
      release(blk);
    }
  }

  // Frees every cached segment that is one free block (any stream).
  size_t release_cached(int device) {
    size_t freed = 0;
    for (FreeList* list : {&small_free_, &large_free_}) {
      for (auto it = list->begin(); it != list->end();) {
        Block* b = *it;
        if ((device >= 0 && b->device != device) || b->prev || b->next) {
          ++it;
          continue;
        }
        it = list->erase(it);
        // cudaFree waits for the device to be idle, so a block freed while
        // its stream may still have been using it is safe to return here.
        backend_.raw_free(b->device, b->ptr);
        MemoryStats& s = stats_[b->device];
        s.reserved -= b->size;
        s.segment_frees++;
        freed += b->size;
        delete b;
      }
    }
    return freed;
  }

  [[noreturn]] void throw_oom(int device, size_t nbytes, size_t seg) {
    const MemoryStats& s = stats_[device];
    auto [free_b, total_b] = backend_.device_memory(device);
    KEEL_FAIL(backend_.name(), " out of memory on ", backend_.device_name(device),
              ": tried to allocate ", format_bytes(nbytes),
              seg != nbytes ? " (a segment of " + format_bytes(seg) + ")" : std::string(),
              "; keel holds ", format_bytes(s.allocated), " in use and ", format_bytes(s.cached()),
              " cached (freed and retried); the device has ", format_bytes(free_b), " free of ",
              format_bytes(total_b));
  }

  PoolBackend& backend_;
  mutable std::mutex mu_;
  std::map<char*, Block*> live_;  // by address, for interior-pointer lookup
  FreeList small_free_, large_free_;
  std::vector<std::pair<Block*, std::vector<void*>>> pending_;
  std::map<int, MemoryStats> stats_;
};

}  // namespace keel::cuda
