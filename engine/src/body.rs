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
}
