/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Incremental update of SCTP's CRC32c after a port rewrite. The CRC covers
 * the whole SCTP packet, so recomputing it would mean a loop over the
 * payload. CRC is linear instead: for messages of equal length,
 *   crc(M ^ E) = crc(M) ^ raw(E)
 * where raw is the CRC without the initial and final inversion. E is the
 * port change followed by n zero bytes, and raw(E) is raw(change) carried
 * over those zeros, which is a multiplication by x^(8n) modulo the
 * polynomial: one product per set bit of n, with the powers x^(8 * 2^j)
 * precomputed. This is the technique of zlib's crc32_combine.
 *
 * Polynomials are in the reflected form CRC32c uses: bit 31 is x^0.
 */
#ifndef FASTPATH_CRC32C_H
#define FASTPATH_CRC32C_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

#define FP_CRC32C_POLY 0x82f63b78 /* Castagnoli, reflected */

/* x^(8 * 2^j) modulo the polynomial: carries a CRC over 2^j zero bytes. */
static const __u32 fp_crc32c_zeros_pow[16] = {
	0x00800000, 0x00008000, 0x82f63b78, 0x6ea2d55c, 0x18b8ea18, 0x510ac59a,
	0xb82be955, 0xb8fdb1e7, 0x88e56f72, 0x74c360a4, 0xe4172b16, 0x0d65762a,
	0x35d73a62, 0x28461564, 0xbf455269, 0xe2ea32dc,
};

/*
 * fp_bit returns bit i of x, hidden from the compiler. Left alone, LLVM turns
 * "bit * c" into a select and lowers it as ((x << k) s>> 63) & c, and the
 * verifier forks its state on every AND of a [-1, 0] value with a constant:
 * 2^32 paths through one CRC step. A multiplication it just bounds.
 */
static __always_inline __u32 fp_bit(__u32 x, int i)
{
	__u32 b = (x >> i) & 1;

	asm volatile("" : "+r"(b));
	return b;
}

/* fp_crc32c_step shifts a raw CRC register by one bit. */
static __always_inline __u32 fp_crc32c_step(__u32 r)
{
	return (r >> 1) ^ (fp_bit(r, 0) * FP_CRC32C_POLY);
}

/* fp_crc32c_mulmod returns a * b modulo the polynomial; a is a constant at
 * every use, so the tests of its bits fold away at compile time. */
static __always_inline __u32 fp_crc32c_mulmod(__u32 a, __u32 b)
{
	__u32 p = 0;
	int i;

#pragma unroll
	for (i = 0; i < 32; i++) {
		if ((a >> (31 - i)) & 1)
			p ^= b;
		b = fp_crc32c_step(b);
	}
	return p;
}

/* fp_crc32c_word returns the raw CRC of four bytes loaded as a little-endian
 * word (the byte order CRC32c consumes them in). */
static __always_inline __u32 fp_crc32c_word(__u32 w)
{
	int i;

#pragma unroll
	for (i = 0; i < 32; i++)
		w = fp_crc32c_step(w);
	return w;
}

/*
 * fp_crc32c_delta returns what to XOR into the CRC32c of a message after
 * XORing delta into its first four bytes, n < 65536 bytes before its end.
 *
 * Straight-line code: unrolled, and choosing by multiplication instead of
 * branching on the bits of n, which made the verifier walk every combination.
 * A global function, so the verifier walks it once, not at every call site.
 */
__attribute__((noinline)) __u32 fp_crc32c_delta(__u32 delta, __u32 n)
{
	__u32 crc = fp_crc32c_word(delta);
	int j;

#pragma unroll
	for (j = 0; j < 16; j++)
		crc ^= (fp_crc32c_mulmod(fp_crc32c_zeros_pow[j], crc) ^ crc) * fp_bit(n, j);
	return crc;
}

#endif /* FASTPATH_CRC32C_H */
