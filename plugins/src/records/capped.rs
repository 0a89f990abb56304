//! A reader that refuses input whose pieces never end: a record (a CSV row, an NDJSON
//! line, an XML text or tag) is held whole in memory while it is read, so one that runs
//! on for gigabytes is refused once `cap` bytes pass without one of the bytes that end a
//! piece (`\n`; `<` and `>` for XML), rather than growing until the process is killed and
//! every later run meets the same file. Hand-written: a counting `Read` adapter is a
//! dozen lines, and no crate offers "bytes since the last delimiter".

use std::io::{Error, ErrorKind, Read};

pub(super) struct Capped<R> {
    inner: R,
    /// The bytes that end a piece (one, or two).
    ends: (u8, u8),
    cap: u64,
    /// Bytes read since the last byte of `ends`.
    since: u64,
    /// Bytes read in all.
    read: u64,
    /// Once a piece ran past the cap: why, for every later read.
    refused: Option<String>,
}

impl<R: Read> Capped<R> {
    pub(super) fn new(inner: R, ends: &'static [u8], cap: u64) -> Self {
        let ends = (ends[0], *ends.last().unwrap_or(&ends[0]));
        Self { inner, ends, cap, since: 0, read: 0, refused: None }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(why) = &self.refused {
            return Err(Error::new(ErrorKind::InvalidData, why.clone()));
        }
        let n = self.inner.read(buf)?;
        // The longest run without an end in what was read, the run carried over included.
        let (mut longest, mut from) = (0, 0);
        let mut last = 0;
        for i in memchr::memchr2_iter(self.ends.0, self.ends.1, &buf[..n]) {
            let run = if last == 0 { self.since + i as u64 } else { (i - last) as u64 };
            if run > longest {
                (longest, from) = (run, self.read + i as u64 - run);
            }
            last = i + 1;
        }
        self.since = if last == 0 { self.since + n as u64 } else { (n - last) as u64 };
        self.read += n as u64;
        if self.since > longest {
            (longest, from) = (self.since, self.read - self.since);
        }
        if longest <= self.cap {
            return Ok(n);
        }
        let why = format!(
            "a record longer than max_record_bytes ({} bytes) from byte {from}: refused, the rest not read (raise \
             `max_record_bytes` if the feed's records are this long)",
            self.cap
        );
        self.refused = Some(why.clone());
        // The bytes before the long piece are given first, so that the records they hold
        // are read; the next read fails.
        let chunk_start = self.read - n as u64;
        match from > chunk_start {
            true => Ok((from - chunk_start) as usize),
            false => Err(Error::new(ErrorKind::InvalidData, why)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Capped;
    use std::io::Read;

    #[test]
    fn a_piece_longer_than_the_cap_is_refused_and_shorter_ones_pass() {
        let mut ok = Vec::new();
        let lines = "abc\n".repeat(10_000);
        Capped::new(lines.as_bytes(), b"\n", 3).read_to_end(&mut ok).unwrap();
        assert_eq!(ok, lines.as_bytes());
        let long = format!("a\n{}\nb\n", "x".repeat(100));
        let e = Capped::new(long.as_bytes(), b"\n", 99).read_to_end(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("from byte 2"), "{e}");
        let mut small = Vec::new();
        Capped::new(long.as_bytes(), b"\n", 100).read_to_end(&mut small).unwrap();
        assert_eq!(small.len(), long.len());
        // Read 7 bytes at a time, the run carried from read to read: the same answers.
        let e = Capped::new(Trickle(long.as_bytes()), b"\n", 99).read_to_end(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("from byte 2"), "{e}");
        Capped::new(Trickle(long.as_bytes()), b"\n", 100).read_to_end(&mut Vec::new()).unwrap();
        // Either of two ends ends a piece (XML's `<` and `>`).
        let xml = format!("<a>{}</a>", "t".repeat(50));
        Capped::new(Trickle(xml.as_bytes()), b"<>", 50).read_to_end(&mut Vec::new()).unwrap();
        assert!(Capped::new(Trickle(xml.as_bytes()), b"<>", 49).read_to_end(&mut Vec::new()).is_err());
    }

    /// At most 7 bytes a read.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(7);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
}
