//! An item's bytes: in memory up to a threshold, spooled to a temporary file above it, so
//! a multi-GB object never needs its size in RAM.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWriteExt};

/// Where and above which size bodies are spooled to disk.
#[derive(Debug, Clone)]
pub struct Spool {
    pub threshold: u64,
    pub dir: Option<PathBuf>,
}

impl Spool {
    fn tempfile(&self) -> std::io::Result<tempfile::NamedTempFile> {
        match &self.dir {
            Some(d) => tempfile::Builder::new().prefix("dqpipe-spool-").tempfile_in(d),
            None => tempfile::Builder::new().prefix("dqpipe-spool-").tempfile(),
        }
    }
}

/// The bytes of one object. Cloning is cheap: memory bodies share their buffer, spooled
/// bodies share the file, which is removed when the last clone is dropped.
#[derive(Debug, Clone)]
pub enum Body {
    Memory(Bytes),
    Spooled(Arc<SpooledFile>),
}

#[derive(Debug)]
pub struct SpooledFile {
    file: tempfile::TempPath,
    len: u64,
}

impl Body {
    pub fn len(&self) -> u64 {
        match self {
            Body::Memory(b) => b.len() as u64,
            Body::Spooled(f) => f.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads a stream of chunks into a body, moving to a temporary file once it grows past
    /// the spool threshold. `size_hint` (the length the store announced) sizes the buffer
    /// once, instead of doubling it up to twice the body's size.
    pub async fn from_stream<S, E>(mut stream: S, size_hint: Option<u64>, spool: &Spool) -> Result<Body, BodyError<E>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let capacity = size_hint.filter(|n| *n <= spool.threshold).unwrap_or(0);
        let mut buf = BytesMut::with_capacity(capacity as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(BodyError::Source)?;
            if (buf.len() + chunk.len()) as u64 > spool.threshold {
                let tmp = spool.tempfile().map_err(BodyError::Spool)?;
                let (std_file, path) = tmp.into_parts();
                let mut file = tokio::fs::File::from_std(std_file);
                file.write_all(&buf).await.map_err(BodyError::Spool)?;
                file.write_all(&chunk).await.map_err(BodyError::Spool)?;
                let mut len = (buf.len() + chunk.len()) as u64;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(BodyError::Source)?;
                    file.write_all(&chunk).await.map_err(BodyError::Spool)?;
                    len += chunk.len() as u64;
                }
                file.flush().await.map_err(BodyError::Spool)?;
                // A write that failed in tokio's background (a full disk) is reported to a
                // later call only: the file's size says whether every byte is there.
                let on_disk = file.metadata().await.map_err(BodyError::Spool)?.len();
                if on_disk != len {
                    return Err(BodyError::Spool(std::io::Error::other(format!(
                        "spool file holds {on_disk} of {len} bytes (disk full?)"
                    ))));
                }
                return Ok(Body::Spooled(Arc::new(SpooledFile { file: path, len })));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Body::Memory(buf.freeze()))
    }

    /// The whole body in memory, if it is at most `max` bytes.
    pub async fn to_bytes(&self, max: u64) -> Result<Bytes, ToBytesError> {
        if self.len() > max {
            return Err(ToBytesError::TooLarge { len: self.len(), max });
        }
        match self {
            Body::Memory(b) => Ok(b.clone()),
            Body::Spooled(f) => tokio::fs::read(&f.file).await.map(Bytes::from).map_err(ToBytesError::Spool),
        }
    }

    /// A reader over the body, whichever way it is held.
    pub async fn reader(&self) -> std::io::Result<Box<dyn AsyncRead + Send + Unpin>> {
        match self {
            Body::Memory(b) => Ok(Box::new(std::io::Cursor::new(b.clone()))),
            Body::Spooled(f) => Ok(Box::new(tokio::fs::File::open(&f.file).await?)),
        }
    }

    /// The file behind a spooled body.
    pub fn spooled_path(&self) -> Option<&Path> {
        match self {
            Body::Spooled(f) => Some(&f.file),
            Body::Memory(_) => None,
        }
    }

    /// The body as a blocking reader that can seek, whichever way it is held: for parsers
    /// that run on a blocking thread (CSV, gzip, zip, tar).
    pub fn blocking_reader(&self) -> std::io::Result<BlockingReader> {
        Ok(match self {
            Body::Memory(b) => BlockingReader::Memory(std::io::Cursor::new(b.clone())),
            Body::Spooled(f) => BlockingReader::File(std::io::BufReader::new(std::fs::File::open(&f.file)?)),
        })
    }
}

/// A body read on a blocking thread ([`Body::blocking_reader`]).
pub enum BlockingReader {
    Memory(std::io::Cursor<Bytes>),
    File(std::io::BufReader<std::fs::File>),
}

impl std::io::Read for BlockingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            BlockingReader::Memory(r) => r.read(buf),
            BlockingReader::File(r) => r.read(buf),
        }
    }
}

impl std::io::Seek for BlockingReader {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        match self {
            BlockingReader::Memory(r) => r.seek(pos),
            BlockingReader::File(r) => r.seek(pos),
        }
    }
}

/// Builds a body by writing it: in memory up to the spool threshold, then in a temporary
/// file, so a node that makes large outputs (a record twice its input) holds at most the
/// threshold of it. Synchronous, for CPU-bound work on a blocking thread. [`put`](Self::put)
/// never fails: the first I/O error is kept and returned by [`finish`](Self::finish).
#[derive(Debug)]
pub struct BodyWriter {
    spool: Spool,
    buf: Vec<u8>,
    file: Option<(std::io::BufWriter<std::fs::File>, tempfile::TempPath)>,
    len: u64,
    error: Option<std::io::Error>,
}

impl BodyWriter {
    /// `expected`: the length the output will probably have, to size the buffer once.
    pub fn new(spool: &Spool, expected: usize) -> BodyWriter {
        let capacity = expected.min(spool.threshold as usize);
        BodyWriter { spool: spool.clone(), buf: Vec::with_capacity(capacity), file: None, len: 0, error: None }
    }

    pub fn put(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if self.error.is_some() {
            return;
        }
        if let Some((file, _)) = &mut self.file {
            if let Err(e) = std::io::Write::write_all(file, bytes) {
                self.error = Some(e);
            }
            return;
        }
        if (self.buf.len() + bytes.len()) as u64 <= self.spool.threshold {
            self.buf.extend_from_slice(bytes);
            return;
        }
        let spill = || -> std::io::Result<_> {
            let (std_file, path) = self.spool.tempfile()?.into_parts();
            let mut file = std::io::BufWriter::with_capacity(256 * 1024, std_file);
            std::io::Write::write_all(&mut file, &self.buf)?;
            std::io::Write::write_all(&mut file, bytes)?;
            Ok((file, path))
        };
        match spill() {
            Ok(f) => self.file = Some(f),
            Err(e) => self.error = Some(e),
        }
        self.buf = Vec::new();
    }

    /// The length written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> std::io::Result<Body> {
        if let Some(e) = self.error {
            return Err(e);
        }
        match self.file {
            None => Ok(Body::Memory(Bytes::from(self.buf))),
            Some((file, path)) => {
                file.into_inner().map_err(|e| e.into_error())?;
                Ok(Body::Spooled(Arc::new(SpooledFile { file: path, len: self.len })))
            }
        }
    }
}

impl std::io::Write for BodyWriter {
    /// Never fails, as [`put`](Self::put): an I/O error is [`finish`](Self::finish)'s, so
    /// that a serialiser writing here never takes it for one of its own.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.put(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError<E> {
    #[error("reading the object: {0}")]
    Source(E),
    #[error("spooling to a temporary file: {0}")]
    Spool(std::io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum ToBytesError {
    #[error("object is {len} bytes, over the limit of {max} bytes")]
    TooLarge { len: u64, max: u64 },
    #[error("reading the spooled body back: {0}")]
    Spool(std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn small_bodies_stay_in_memory_large_ones_spool() {
        let spool = Spool { threshold: 10, dir: None };
        let small = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(b"hello"))]);
        let b = Body::from_stream(small, Some(5), &spool).await.unwrap();
        assert!(matches!(b, Body::Memory(_)));
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            (0..5).map(|_| Ok(Bytes::from_static(b"0123456789"))).collect();
        let b = Body::from_stream(futures::stream::iter(chunks), None, &spool).await.unwrap();
        let path = b.spooled_path().unwrap().to_path_buf();
        assert_eq!(b.len(), 50);
        assert_eq!(std::fs::read(&path).unwrap().len(), 50);
        assert_eq!(b.to_bytes(100).await.unwrap().len(), 50);
        assert!(b.to_bytes(49).await.is_err());
        drop(b);
        assert!(!path.exists(), "spool file is removed with the body");
    }

    #[tokio::test]
    async fn written_bodies_spill_past_the_threshold() {
        let spool = Spool { threshold: 10, dir: None };
        let mut w = BodyWriter::new(&spool, 100);
        w.put(b"01234");
        w.put(b"56789");
        let b = w.finish().unwrap();
        assert!(matches!(b, Body::Memory(_)), "10 bytes stay in memory");
        let mut w = BodyWriter::new(&spool, 100);
        for _ in 0..5 {
            w.put(b"0123456789");
        }
        assert_eq!(w.len(), 50);
        let b = w.finish().unwrap();
        assert_eq!(b.len(), 50);
        assert_eq!(std::fs::read(b.spooled_path().unwrap()).unwrap(), b"0123456789".repeat(5));
    }
}
