//! `memcmp` for the plugin, eight bytes at a time.
//!
//! The C library of `wasm32-wasip2` compares one byte per loop turn, and the
//! router's epoch check runs on every turn of every guest loop. serde_json
//! calls it for every map key it inserts or looks up (a `BTreeMap` orders
//! its keys with it), so in domain-fanout it was about 5% of a call
//! (BENCHMARKS.md, "Seventh round"). Comparing words cuts the turns by eight.
//!
//! The SDK exports it as the `memcmp` symbol on wasm only (the linker then
//! leaves the C library's out); elsewhere it is built for its tests alone.

/// Like C's `memcmp` on the first `n` bytes of `a` and `b`: negative, zero or
/// positive as `a` sorts before, equal to or after `b`, bytes unsigned.
///
/// # Safety
/// `a` and `b` must each be valid for reads of `n` bytes.
#[inline]
pub unsafe fn compare(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while n - i >= 8 {
        // SAFETY: `i + 8 <= n`, and the caller vouches for `n` bytes.
        let (x, y) = unsafe {
            (
                a.add(i).cast::<u64>().read_unaligned(),
                b.add(i).cast::<u64>().read_unaligned(),
            )
        };
        if x != y {
            // Memory order is little-endian on wasm (and on the hosts the
            // tests run on, see below): the lowest differing bit is in the
            // first differing byte.
            i += (u64::from_le(x) ^ u64::from_le(y)).trailing_zeros() as usize / 8;
            break;
        }
        i += 8;
    }
    while i < n {
        // SAFETY: `i < n`.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// The symbol the plugin's code and the standard library call.
///
/// # Safety
/// As [`compare`].
#[cfg(all(feature = "memcmp", target_family = "wasm"))]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's contract is `compare`'s.
    unsafe { compare(a, b, n) }
}

#[cfg(test)]
mod tests {
    use super::compare;

    fn sign(a: &[u8], b: &[u8]) -> i32 {
        // SAFETY: both slices have at least `min` bytes.
        let c = unsafe { compare(a.as_ptr(), b.as_ptr(), a.len().min(b.len())) };
        c.signum()
    }

    #[test]
    fn agrees_with_slice_order_on_every_position_and_length() {
        // A difference at each position of each length up to 40, in both
        // directions, with bytes either side of 0x80 (so a signed compare
        // would get them wrong).
        for n in 0..40 {
            let base: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(sign(&base, &base), 0, "equal, n = {n}");
            for at in 0..n {
                for (x, y) in [(0x01, 0xff), (0x7f, 0x80), (b'a', b'b')] {
                    let (mut p, mut q) = (base.clone(), base.clone());
                    p[at] = x;
                    q[at] = y;
                    // Later bytes disagree the other way: only the first
                    // difference may count.
                    for k in at + 1..n {
                        p[k] = 0xff;
                        q[k] = 0;
                    }
                    let want = p.cmp(&q) as i32;
                    assert_eq!(sign(&p, &q), want, "n = {n}, at = {at}");
                    assert_eq!(sign(&q, &p), -want, "n = {n}, at = {at}");
                }
            }
        }
    }

    #[test]
    fn the_sign_is_that_of_the_first_differing_bytes() {
        // SAFETY: three readable bytes each.
        let c = unsafe { compare(b"abz".as_ptr(), b"abc".as_ptr(), 3) };
        assert_eq!(c, i32::from(b'z') - i32::from(b'c'));
        // Unaligned starts inside a longer buffer.
        let buf: Vec<u8> = (0..64).collect();
        let mut other = buf.clone();
        other[50] = 0;
        // SAFETY: 40 bytes from offset 13 of a 64-byte buffer.
        let c = unsafe { compare(buf.as_ptr().add(13), other.as_ptr().add(13), 40) };
        assert_eq!(c, 50);
        // SAFETY: as above, stopping before the difference.
        let c = unsafe { compare(buf.as_ptr().add(13), other.as_ptr().add(13), 37) };
        assert_eq!(c, 0);
    }
}
