/*
 * SHA-256 compression for the hash threads (lib/hash/sha256-wasm.ts): WebAssembly runs it about
 * twice as fast as the JavaScript in @noble/hashes, and the chaining words stay where the caller
 * can read and write them, so the state remains resumable. Padding, partial blocks, the length
 * and the saved-state format are the caller's; this file only compresses whole blocks.
 *
 * Build (clang and lld from Debian; the output is checked in, base64, as sha256-wasm-binary.ts):
 *   bash lib/hash/wasm/build.sh
 */
typedef unsigned int u32;

/* Input blocks go here: 1 MiB, the size of the blocks the hash threads receive. */
#define INPUT_BYTES (1024 * 1024)
static unsigned char input[INPUT_BYTES];
/* Chaining words h0..h7. */
static u32 words[8];

static const u32 K[64] = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static inline u32 load_be(const unsigned char *p) {
  return ((u32)p[0] << 24) | ((u32)p[1] << 16) | ((u32)p[2] << 8) | (u32)p[3];
}

__attribute__((export_name("input"))) unsigned char *input_ptr(void) { return input; }
__attribute__((export_name("words"))) u32 *words_ptr(void) { return words; }
__attribute__((export_name("inputBytes"))) u32 input_bytes(void) { return INPUT_BYTES; }

/*
 * Compresses the first `count` 64-byte blocks of `input` into `words`. The message schedule is a
 * rolling window of 16 words and the rounds are unrolled, so the working set stays in locals
 * (registers once compiled): a third faster than a 64-word schedule in memory.
 */
#define S0(x) (ROTR(x, 2) ^ ROTR(x, 13) ^ ROTR(x, 22))
#define S1(x) (ROTR(x, 6) ^ ROTR(x, 11) ^ ROTR(x, 25))
#define s0(x) (ROTR(x, 7) ^ ROTR(x, 18) ^ ((x) >> 3))
#define s1(x) (ROTR(x, 17) ^ ROTR(x, 19) ^ ((x) >> 10))
#define CH(e, f, g) ((g) ^ ((e) & ((f) ^ (g))))
#define MAJ(a, b, c) (((a) & (b)) | ((c) & ((a) | (b))))
#define R(a, b, c, d, e, f, g, h, k, w) do { u32 t1 = h + S1(e) + CH(e, f, g) + k + w; u32 t2 = S0(a) + MAJ(a, b, c); d += t1; h = t1 + t2; } while (0)
#define W(i) (x[(i) & 15] += s1(x[((i) - 2) & 15]) + x[((i) - 7) & 15] + s0(x[((i) - 15) & 15]))
__attribute__((export_name("compress"))) void compress(u32 count) {
  u32 a0 = words[0], b0 = words[1], c0 = words[2], d0 = words[3];
  u32 e0 = words[4], f0 = words[5], g0 = words[6], h0 = words[7];
  const unsigned char *p = input;
  for (u32 n = 0; n < count; n++, p += 64) {
    u32 x[16];
    for (int t = 0; t < 16; t++) x[t] = load_be(p + 4 * t);
    u32 a = a0, b = b0, c = c0, d = d0, e = e0, f = f0, g = g0, h = h0;
    for (int t = 0; t < 16; t += 8) {
      R(a, b, c, d, e, f, g, h, K[t + 0], x[t + 0]);
      R(h, a, b, c, d, e, f, g, K[t + 1], x[t + 1]);
      R(g, h, a, b, c, d, e, f, K[t + 2], x[t + 2]);
      R(f, g, h, a, b, c, d, e, K[t + 3], x[t + 3]);
      R(e, f, g, h, a, b, c, d, K[t + 4], x[t + 4]);
      R(d, e, f, g, h, a, b, c, K[t + 5], x[t + 5]);
      R(c, d, e, f, g, h, a, b, K[t + 6], x[t + 6]);
      R(b, c, d, e, f, g, h, a, K[t + 7], x[t + 7]);
    }
    for (int t = 16; t < 64; t += 8) {
      R(a, b, c, d, e, f, g, h, K[t + 0], W(t + 0));
      R(h, a, b, c, d, e, f, g, K[t + 1], W(t + 1));
      R(g, h, a, b, c, d, e, f, K[t + 2], W(t + 2));
      R(f, g, h, a, b, c, d, e, K[t + 3], W(t + 3));
      R(e, f, g, h, a, b, c, d, K[t + 4], W(t + 4));
      R(d, e, f, g, h, a, b, c, K[t + 5], W(t + 5));
      R(c, d, e, f, g, h, a, b, K[t + 6], W(t + 6));
      R(b, c, d, e, f, g, h, a, K[t + 7], W(t + 7));
    }
    a0 += a; b0 += b; c0 += c; d0 += d; e0 += e; f0 += f; g0 += g; h0 += h;
  }
  words[0] = a0; words[1] = b0; words[2] = c0; words[3] = d0;
  words[4] = e0; words[5] = f0; words[6] = g0; words[7] = h0;
}
