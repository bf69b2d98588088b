// oneDNN's 2-D convolution as three XLA FFI handlers: forward, backward-data, backward-weights.
//
// Built by `python -m jtransfer.cpu.onednn build` (`make onednn`); used by
// jtransfer/cpu/onednn.py, which registers the handlers and calls them from `jtransfer.cpu.conv`.
//
// Layouts are the ones jtransfer's convolutions use: NHWC activations and HWIO kernels, float32,
// no dilation; grouped (depthwise included) as XLA groups them: a (kh, kw, I/G, O) kernel whose
// output channel o belongs to group o / (O/G), i.e. oneDNN's 5-D `hwigo`. Activations stay NHWC
// (oneDNN's brgemm/jit kernels read it directly); the kernel is reordered to the layout the
// chosen primitive asks for (`format_tag::any`), and the weight gradient back from it. Primitives
// and reorders are created once per shape and cached.
//
// Scratchpads are the caller's (`scratchpad_mode::user`), one per execution. With the library's
// default (`scratchpad_mode::library`, and DNNL_ENABLE_CONCURRENT_EXEC=OFF as Debian builds it)
// the scratchpad is the creating thread's, and "each primitive should be executed in the same
// thread it was created in" (oneDNN's dnnl_scratchpad_mode_t). XLA calls these handlers from any
// of its threads, so a primitive cached by one ran on another with a scratchpad that was not
// there: a segmentation fault in an OpenMP worker (issue 27; tests/onednn_threads.cc reproduces
// it without XLA: the depthwise weight gradient, which reduces through its scratchpad).
//
// Compiles against oneDNN 2.x (Debian bookworm's 2.6, what `make onednn` fetches) and 3.x (the
// primitive descriptors there take the problem directly; 3.7 tested).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>

#include "dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

namespace {

enum Direction { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };
const char* kNames[] = {"forward", "backward_data", "backward_weights"};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// oneDNN's logical dims: src/dst NCHW, weights OIHW or, grouped, GOIHW (the memory formats say
// NHWC / HWIO / HWIGO).
struct Geometry {
  memory::dims src, wei, dst, strides, pad_lo, pad_hi;
};

tag UserWeights(const memory::dims& wei) { return wei.size() == 5 ? tag::hwigo : tag::hwio; }

using Key = std::tuple<int, memory::dims, memory::dims, memory::dims, memory::dims, memory::dims,
                       memory::dims>;

struct Entry {
  dnnl::primitive conv;
  memory::desc wei_md;  // the (diff-)weights layout the primitive chose
  memory::desc scratch_md;  // its scratchpad (user mode: the caller provides it)
  bool reorder = false;
  dnnl::primitive to_or_from_hwio;  // HWIO -> wei_md, or wei_md -> HWIO for backward-weights
  memory::desc reorder_scratch_md;
};

// Every primitive here takes its scratchpad from the caller (see the top of the file).
dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

std::mutex cache_mu;
std::mutex run_mu;
std::map<Key, Entry> cache;

memory::desc Plain(const memory::dims& dims, tag t) { return memory::desc(dims, dt::f32, t); }

// A backward primitive's descriptor (`P`: convolution_backward_data or _weights, whose
// constructors take the same problem), hinted by the forward one.
template <class P>
typename P::primitive_desc Backward(const Geometry& g, const memory::desc& src,
                                    const memory::desc& wei, const memory::desc& dst,
                                    const dnnl::convolution_forward::primitive_desc& fwd) {
  const auto direct = dnnl::algorithm::convolution_direct;
#if DNNL_VERSION_MAJOR >= 3
  return typename P::primitive_desc(Engine(), direct, src, wei, dst, g.strides, g.pad_lo,
                                    g.pad_hi, fwd, UserScratchpad());
#else
  typename P::desc d(direct, src, wei, dst, g.strides, g.pad_lo, g.pad_hi);
  return typename P::primitive_desc(d, UserScratchpad(), Engine(), fwd);
#endif
}

Entry Make(Direction d, const Geometry& g) {
  memory::desc src = Plain(g.src, tag::nhwc), dst = Plain(g.dst, tag::nhwc);
  memory::desc any_w(g.wei, dt::f32, tag::any);
  const auto direct = dnnl::algorithm::convolution_direct;
#if DNNL_VERSION_MAJOR >= 3
  // oneDNN 3.x: primitive descriptors take the problem directly (no operation descriptor).
  dnnl::convolution_forward::primitive_desc fwd(Engine(), dnnl::prop_kind::forward_training,
                                                direct, src, any_w, dst, g.strides, g.pad_lo,
                                                g.pad_hi, UserScratchpad());
#else
  dnnl::convolution_forward::desc fd(dnnl::prop_kind::forward_training, direct, src, any_w, dst,
                                     g.strides, g.pad_lo, g.pad_hi);
  dnnl::convolution_forward::primitive_desc fwd(fd, UserScratchpad(), Engine());
#endif
  Entry e;
  const char* impl = nullptr;
  if (d == kForward) {
    e.conv = dnnl::convolution_forward(fwd);
    e.wei_md = fwd.weights_desc();
    e.scratch_md = fwd.scratchpad_desc();
    impl = fwd.impl_info_str();
  } else if (d == kBackwardData) {
    auto pd = Backward<dnnl::convolution_backward_data>(g, src, any_w, dst, fwd);
    e.conv = dnnl::convolution_backward_data(pd);
    e.wei_md = pd.weights_desc();
    e.scratch_md = pd.scratchpad_desc();
    impl = pd.impl_info_str();
  } else {
    auto pd = Backward<dnnl::convolution_backward_weights>(g, src, any_w, dst, fwd);
    e.conv = dnnl::convolution_backward_weights(pd);
    e.wei_md = pd.diff_weights_desc();
    e.scratch_md = pd.scratchpad_desc();
    impl = pd.impl_info_str();
  }
  memory::desc hwio = Plain(g.wei, UserWeights(g.wei));
  e.reorder = e.wei_md != hwio;
  if (e.reorder) {
    auto pd = d == kBackwardWeights
                  ? dnnl::reorder::primitive_desc(Engine(), e.wei_md, Engine(), hwio,
                                                  UserScratchpad())
                  : dnnl::reorder::primitive_desc(Engine(), hwio, Engine(), e.wei_md,
                                                  UserScratchpad());
    e.to_or_from_hwio = dnnl::reorder(pd);
    e.reorder_scratch_md = pd.scratchpad_desc();
  }
  if (std::getenv("JTRANSFER_ONEDNN_VERBOSE")) {
    const size_t n = g.wei.size();
    std::fprintf(stderr,
                 "jtransfer onednn %s N%ld C%ld H%ld W%ld -> O%ld k%ldx%ld s%ldx%ld g%ld: %s%s\n",
                 kNames[d], (long)g.src[0], (long)g.src[1], (long)g.src[2], (long)g.src[3],
                 (long)g.dst[1], (long)g.wei[n - 2], (long)g.wei[n - 1], (long)g.strides[0],
                 (long)g.strides[1], (long)(n == 5 ? g.wei[0] : 1), impl,
                 e.reorder ? " (kernel reordered)" : "");
  }
  return e;
}

Entry Get(Direction d, const Geometry& g) {
  Key key{d, g.src, g.wei, g.dst, g.strides, g.pad_lo, g.pad_hi};
  std::lock_guard<std::mutex> lock(cache_mu);
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, Make(d, g)).first;
  return it->second;
}

// `x`, `w`, `y`: the NHWC input, HWIO kernel and NHWC output shapes, whichever are operands.
ffi::Error Run(Direction d, ffi::Span<const int64_t> x, ffi::Span<const int64_t> w,
               ffi::Span<const int64_t> y, float* src, float* wei, float* dst, int64_t sh,
               int64_t sw, int64_t pt, int64_t pl, int64_t pb, int64_t pr, int64_t groups) {
  if (x.size() != 4 || w.size() != 4 || y.size() != 4) {
    return ffi::Error::InvalidArgument("jtransfer onednn conv: operands must be rank 4");
  }
  const int64_t oh = (x[1] + pt + pb - w[0]) / sh + 1, ow = (x[2] + pl + pr - w[1]) / sw + 1;
  if (groups < 1 || w[3] % groups || x[3] != w[2] * groups || y[3] != w[3] || y[0] != x[0] ||
      y[1] != oh || y[2] != ow) {
    return ffi::Error::InvalidArgument(
        "jtransfer onednn conv " + std::string(kNames[d]) + ": shapes do not match (input " +
        std::to_string(x[0]) + "x" + std::to_string(x[1]) + "x" + std::to_string(x[2]) + "x" +
        std::to_string(x[3]) + ", kernel " + std::to_string(w[0]) + "x" + std::to_string(w[1]) +
        "x" + std::to_string(w[2]) + "x" + std::to_string(w[3]) + ", groups " +
        std::to_string(groups) + ")");
  }
  memory::dims oihw = groups == 1 ? memory::dims{w[3], w[2], w[0], w[1]}
                                  : memory::dims{groups, w[3] / groups, w[2], w[0], w[1]};
  Geometry g{{x[0], x[3], x[1], x[2]}, oihw, {y[0], y[3], y[1], y[2]},
             {sh, sw},           {pt, pl},           {pb, pr}};
  try {
    Entry e = Get(d, g);
    memory ms(Plain(g.src, tag::nhwc), Engine(), src);
    memory mw(Plain(g.wei, UserWeights(g.wei)), Engine(), wei);
    memory md(Plain(g.dst, tag::nhwc), Engine(), dst);
    memory mk = e.reorder ? memory(e.wei_md, Engine()) : mw;
    // This execution's own scratchpads: no state shared with the thread that made the primitive.
    memory scratch(e.scratch_md, Engine());
    memory reorder_scratch(e.reorder_scratch_md, Engine());
    // One oneDNN convolution at a time: XLA runs independent thunks (a layer's input and weight
    // gradients) concurrently, and two OpenMP teams on the same cores slow both down.
    static const bool serial = std::getenv("JTRANSFER_ONEDNN_CONCURRENT") == nullptr;
    std::unique_lock<std::mutex> run_lock(run_mu, std::defer_lock);
    if (serial) run_lock.lock();
    dnnl::stream s(Engine());
    const std::pair<int, memory> reorder_pad{DNNL_ARG_SCRATCHPAD, reorder_scratch};
    if (d != kBackwardWeights && e.reorder) {
      e.to_or_from_hwio.execute(s, {{DNNL_ARG_FROM, mw}, {DNNL_ARG_TO, mk}, reorder_pad});
    }
    const std::pair<int, memory> pad{DNNL_ARG_SCRATCHPAD, scratch};
    if (d == kForward) {
      e.conv.execute(s, {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mk}, {DNNL_ARG_DST, md}, pad});
    } else if (d == kBackwardData) {
      e.conv.execute(s, {{DNNL_ARG_DIFF_SRC, ms}, {DNNL_ARG_WEIGHTS, mk}, {DNNL_ARG_DIFF_DST, md},
                         pad});
    } else {
      e.conv.execute(s, {{DNNL_ARG_SRC, ms}, {DNNL_ARG_DIFF_WEIGHTS, mk}, {DNNL_ARG_DIFF_DST, md},
                         pad});
      if (e.reorder) {
        e.to_or_from_hwio.execute(s, {{DNNL_ARG_FROM, mk}, {DNNL_ARG_TO, mw}, reorder_pad});
      }
    }
    s.wait();
  } catch (const dnnl::error& err) {
    return ffi::Error::Internal(std::string("jtransfer onednn conv ") + kNames[d] + ": " +
                                err.what());
  }
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> y,
                   int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t pb, int64_t pr,
                   int64_t g) {
  return Run(kForward, x.dimensions(), w.dimensions(), y->dimensions(), x.typed_data(),
             w.typed_data(), y->typed_data(), sh, sw, pt, pl, pb, pr, g);
}

ffi::Error BackwardData(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w,
                        ffi::ResultBuffer<ffi::F32> dx, int64_t sh, int64_t sw, int64_t pt,
                        int64_t pl, int64_t pb, int64_t pr, int64_t g) {
  return Run(kBackwardData, dx->dimensions(), w.dimensions(), dy.dimensions(), dx->typed_data(),
             w.typed_data(), dy.typed_data(), sh, sw, pt, pl, pb, pr, g);
}

ffi::Error BackwardWeights(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                           ffi::ResultBuffer<ffi::F32> dw, int64_t sh, int64_t sw, int64_t pt,
                           int64_t pl, int64_t pb, int64_t pr, int64_t g) {
  return Run(kBackwardWeights, x.dimensions(), dw->dimensions(), dy.dimensions(), x.typed_data(),
             dw->typed_data(), dy.typed_data(), sh, sw, pt, pl, pb, pr, g);
}

}  // namespace

// Two operands, one result, and the geometry as attributes (strides; padding top, left, bottom,
// right; groups).
#define JT_CONV_BINDING                                                                      \
  ffi::Ffi::Bind()                                                                           \
      .Arg<ffi::Buffer<ffi::F32>>()                                                          \
      .Arg<ffi::Buffer<ffi::F32>>()                                                          \
      .Ret<ffi::Buffer<ffi::F32>>()                                                          \
      .Attr<int64_t>("sh")                                                                   \
      .Attr<int64_t>("sw")                                                                   \
      .Attr<int64_t>("pt")                                                                   \
      .Attr<int64_t>("pl")                                                                   \
      .Attr<int64_t>("pb")                                                                   \
      .Attr<int64_t>("pr")                                                                   \
      .Attr<int64_t>("g")

XLA_FFI_DEFINE_HANDLER_SYMBOL(JtOnednnConvForward, Forward, JT_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JtOnednnConvBackwardData, BackwardData, JT_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JtOnednnConvBackwardWeights, BackwardWeights, JT_CONV_BINDING);
