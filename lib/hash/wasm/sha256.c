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

/* Compresses the first `count` 64-byte blocks of `input` into `words`. */
__attribute__((export_name("compress"))) void compress(u32 count) {
  u32 h0 = words[0], h1 = words[1], h2 = words[2], h3 = words[3];
  u32 h4 = words[4], h5 = words[5], h6 = words[6], h7 = words[7];
  const unsigned char *p = input;
  for (u32 n = 0; n < count; n++, p += 64) {
    u32 w[64];
    for (int t = 0; t < 16; t++) w[t] = load_be(p + 4 * t);
    for (int t = 16; t < 64; t++) {
      u32 s0 = ROTR(w[t - 15], 7) ^ ROTR(w[t - 15], 18) ^ (w[t - 15] >> 3);
      u32 s1 = ROTR(w[t - 2], 17) ^ ROTR(w[t - 2], 19) ^ (w[t - 2] >> 10);
      w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    u32 a = h0, b = h1, c = h2, d = h3, e = h4, f = h5, g = h6, h = h7;
    for (int t = 0; t < 64; t++) {
      u32 S1 = ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25);
      u32 ch = (e & f) ^ (~e & g);
      u32 t1 = h + S1 + ch + K[t] + w[t];
      u32 S0 = ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22);
      u32 maj = (a & b) ^ (a & c) ^ (b & c);
      u32 t2 = S0 + maj;
      h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h0 += a; h1 += b; h2 += c; h3 += d; h4 += e; h5 += f; h6 += g; h7 += h;
  }
  words[0] = h0; words[1] = h1; words[2] = h2; words[3] = h3;
  words[4] = h4; words[5] = h5; words[6] = h6; words[7] = h7;
}
