// Issue 27's crash without XLA: each convolution's primitives are made on one thread and run on
// another, as XLA's thread pool does with jtransfer's oneDNN handlers (which cache primitives for
// the whole process). Before the handlers gave each execution its own scratchpad, oneDNN's default
// (library) scratchpad belonged to the creating thread, and the depthwise weight gradient below
// crashed in an OpenMP worker. tests/test_onednn.py compiles and runs this; it prints "ok N" when
// every case ran on both threads with bitwise the same result.
#include <cstdio>
#include <thread>
#include <vector>

#include "onednn_conv.cc"

namespace {

struct Case {
  int64_t n, h, w, ci, k, s, pt, pl, pb, pr, co, groups;
};

// EfficientNet-Lite0's depthwise and 1x1 convolutions at 32 px, ResNet 3x3s, and the stem.
const Case kCases[] = {
    {4, 16, 16, 32, 3, 1, 1, 1, 1, 1, 16, 1},   {4, 16, 16, 96, 3, 2, 0, 0, 1, 1, 96, 96},
    {4, 8, 8, 144, 5, 2, 1, 1, 2, 2, 144, 144}, {4, 4, 4, 240, 3, 2, 0, 0, 1, 1, 240, 240},
    {4, 2, 2, 480, 5, 1, 2, 2, 2, 2, 480, 480}, {4, 1, 1, 1152, 3, 1, 1, 1, 1, 1, 1152, 1152},
    {4, 32, 32, 3, 3, 2, 0, 0, 1, 1, 32, 1},    {4, 2, 2, 672, 1, 1, 0, 0, 0, 0, 192, 1},
    {2, 8, 8, 64, 3, 1, 1, 1, 1, 1, 64, 1},     {2, 4, 4, 256, 3, 1, 1, 1, 1, 1, 256, 1},
};

std::vector<float> Filled(size_t n, float scale) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = scale * static_cast<float>((i * 37) % 101) / 101.0f;
  return v;
}

}  // namespace

int main() {
  int ran = 0;
  for (const Case& c : kCases) {
    const int64_t oh = (c.h + c.pt + c.pb - c.k) / c.s + 1, ow = (c.w + c.pl + c.pr - c.k) / c.s + 1;
    const std::vector<int64_t> xs{c.n, c.h, c.w, c.ci}, ws{c.k, c.k, c.ci / c.groups, c.co},
        ys{c.n, oh, ow, c.co};
    const ffi::Span<const int64_t> X(xs.data(), 4), W(ws.data(), 4), Y(ys.data(), 4);
    for (int d = kForward; d <= kBackwardWeights; ++d) {
      // Inputs stay fixed; the direction's output is the buffer it writes.
      std::vector<float> x = Filled(c.n * c.h * c.w * c.ci, 1.0f);
      std::vector<float> w = Filled(c.k * c.k * (c.ci / c.groups) * c.co, 0.5f);
      std::vector<float> y = Filled(c.n * oh * ow * c.co, 0.25f);
      std::vector<float>& out = d == kForward ? y : d == kBackwardData ? x : w;
      std::vector<float> results[2];
      for (int t = 0; t < 2; ++t) {  // thread 0 makes the primitive, thread 1 only runs it
        std::thread([&] {
          ffi::Error e = Run(static_cast<Direction>(d), X, W, Y, x.data(), w.data(), y.data(),
                             c.s, c.s, c.pt, c.pl, c.pb, c.pr, c.groups);
          if (e.failure()) {
            std::fprintf(stderr, "error: %s\n", e.message().c_str());
            std::exit(2);
          }
        }).join();
        results[t] = out;
      }
      if (results[0] != results[1]) {
        std::fprintf(stderr, "%s c%ld k%ld s%ld g%ld: another thread computed another result\n",
                     kNames[d], c.ci, c.k, c.s, c.groups);
        return 3;
      }
      ++ran;
    }
  }
  std::printf("ok %d\n", ran);
  return 0;
}
