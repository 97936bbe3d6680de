// Host build of src/engine/cuda/kernel.cu (tests/kernel_host.rs): the CUDA
// qualifiers and intrinsics are shimmed, render_pixels runs one "thread" per
// pixel on the CPU, with the host's re-run after the first out-of-range
// structure-factor lookup (cuda/image.rs launch_image). Reads the inputs
// host_kernel_inputs wrote into DIR, writes DIR/out.bin (1 + NDIR planes of
// npix doubles). kernel_interface.h is the header engine::cuda::header()
// generates (the test writes it and passes its folder with -I), included
// before kernel.cu as NVRTC sees it.
//
// `driver --layout` prints struct Params as this compiler lays it out (each
// field's offset and size, the struct's size) and the shared constants as
// it reads them, for the test to compare with the Rust side.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmath>
#include <vector>

#define __device__
#define __forceinline__ inline
#define __global__
#define __restrict__ __restrict
struct dim3 {
    unsigned x, y, z;
};
static dim3 blockIdx = {0, 0, 0}, blockDim = {1, 1, 1}, threadIdx = {0, 0, 0};
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline int __double2loint(double x) {
    uint64_t u;
    memcpy(&u, &x, 8);
    return (int)(uint32_t)(u & 0xffffffffu);
}
static inline int __float_as_int(float x) {
    int i;
    memcpy(&i, &x, 4);
    return i;
}
using std::isfinite;

#include <stddef.h>

#include "kernel_interface.h"
#include "../../src/engine/cuda/kernel.cu"

static int layout() {
#define FIELD(f) printf("field %s %zu %zu\n", #f, offsetof(Params, f), sizeof(((Params*)0)->f));
    PARAMS_FIELDS(FIELD)
#undef FIELD
    printf("sizeof %zu\n", sizeof(Params));
#define SCALAR(c) printf("const %s %.17g\n", #c, (double)(c));
    SHARED_SCALARS(SCALAR)
#undef SCALAR
#define ARRAY(c)                                                                      \
    {                                                                                 \
        const double v[c##_LEN] = c;                                                  \
        for (int i = 0; i < c##_LEN; i++) printf("const %s[%d] %.17g\n", #c, i, v[i]); \
    }
    SHARED_ARRAYS(ARRAY)
#undef ARRAY
    return 0;
}

static std::vector<char> slurp(const char* dir, const char* name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE* f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(2);
    }
    std::vector<char> b;
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) b.insert(b.end(), buf, buf + n);
    fclose(f);
    return b;
}

template <typename V>
static std::vector<V> as(const std::vector<char>& b) {
    std::vector<V> v(b.size() / sizeof(V));
    memcpy(v.data(), b.data(), v.size() * sizeof(V));
    return v;
}

int main(int argc, char** argv) {
    if (argc == 2 && strcmp(argv[1], "--layout") == 0) return layout();
    if (argc != 3) {
        fprintf(stderr, "usage: driver DIR NPIX | driver --layout\n");
        return 2;
    }
    const char* dir = argv[1];
    int npix = atoi(argv[2]);
    std::vector<char> pb = slurp(dir, "params.bin");
    if (pb.size() != sizeof(Params)) {
        fprintf(stderr, "params.bin has %zu bytes, struct Params %zu\n", pb.size(), sizeof(Params));
        return 3;
    }
    Params P;
    memcpy(&P, pb.data(), sizeof P);
    std::vector<double> model64 = as<double>(slurp(dir, "model.bin"));
    std::vector<R> model(model64.begin(), model64.end());
    std::vector<double> hi = as<double>(slurp(dir, "hi.bin"));
    std::vector<double> hkl = as<double>(slurp(dir, "hkl.bin"));
    std::vector<int> pix = as<int>(slurp(dir, "pixels.bin"));
    std::vector<R> out((size_t)npix * NV);
    std::vector<int> oor(npix, -1);
    for (int g = 0; g < npix; g++) render_pixels(P, model.data(), hi.data(), hkl.data(), pix.data(), g, 1, npix, out.data(), oor.data());
    if (INTERPOLATE && P.has_hkl) {
        int p = -1;
        for (int g = 0; g < npix && p < 0; g++)
            if (oor[g] >= 0) p = g;
        if (p >= 0) {
            P.nearest_mode = 1;
            P.switch_pixel = p;
            P.switch_eval = oor[p];
            for (int g = p; g < npix; g++)
                render_pixels(P, model.data(), hi.data(), hkl.data(), pix.data(), g, 1, npix, out.data(), oor.data());
        }
    }
    std::vector<double> o(out.begin(), out.end());
    char path[4096];
    snprintf(path, sizeof path, "%s/out.bin", dir);
    FILE* f = fopen(path, "wb");
    fwrite(o.data(), sizeof(double), o.size(), f);
    fclose(f);
    return 0;
}
