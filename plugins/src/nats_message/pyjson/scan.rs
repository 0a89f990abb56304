//! Finding the end of a run of bytes that need no work, eight at a time: what the parser
//! copies as they are (until `"`, `\` or a control character) and what the writer copies as
//! they are (printable ASCII but `"` and `\`). A 1 MB message is mostly such a run, read
//! once by the parser and written twice; byte by byte, those scans were most of the
//! transform's time.
//!
//! Hand-written SWAR (the bit tricks of "Bit Twiddling Hacks", Determine if a word has a
//! byte less than n) rather than a crate: memchr finds up to three given bytes, not a
//! range, and these two loops are the whole need.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bit of each byte of `w` that is less than `n` (n <= 128). Bytes above the first one
/// flagged may be flagged wrongly (a borrow); the lowest flagged byte is always right.
#[inline]
fn less_than(w: u64, n: u8) -> u64 {
    w.wrapping_sub(LO * u64::from(n)) & !w & HI
}

/// High bit of each byte of `w` equal to `b` (the lowest flagged one is right, as above).
#[inline]
fn equal(w: u64, b: u8) -> u64 {
    less_than(w ^ (LO * u64::from(b)), 1)
}

/// The length of the run at the start of `s` with no `"`, no `\`, no byte below 0x20, and
/// with `printable`, no byte from 0x7F up.
#[inline]
pub(super) fn plain_run(s: &[u8], printable: bool) -> usize {
    let stops = |b: u8| b == b'"' || b == b'\\' || b < 0x20 || (printable && b >= 0x7F);
    let mut i = 0;
    while let Some(chunk) = s.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let mut hit = equal(w, b'"') | equal(w, b'\\') | less_than(w, 0x20);
        if printable {
            // 0x7F and up: the high bit, or all seven low bits set (no carry leaves a byte).
            hit |= (w | (w & !HI).wrapping_add(LO)) & HI;
        }
        if hit != 0 {
            return i + (hit.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + s[i..].iter().position(|&b| stops(b)).unwrap_or(s.len() - i)
}

#[cfg(test)]
mod tests {
    use super::plain_run;

    /// Every byte value at every position of a 19-byte run (the words and the tail), in
    /// both modes, against the byte-by-byte answer.
    #[test]
    fn the_run_ends_where_byte_by_byte_says() {
        for printable in [false, true] {
            let stops = |b: u8| b == b'"' || b == b'\\' || b < 0x20 || (printable && b >= 0x7F);
            for at in 0..19 {
                for b in 0..=255u8 {
                    let mut s = vec![b'a'; 19];
                    s[at] = b;
                    // A stop after it too, so that a wrong borrow would show.
                    s[18.min(at + 1)] = if at < 18 { b'"' } else { s[18] };
                    let expected = s.iter().position(|&c| stops(c)).unwrap_or(s.len());
                    assert_eq!(plain_run(&s, printable), expected, "byte {b:#x} at {at}, printable {printable}");
                }
            }
        }
    }
}
