//! Where uploaded files live: the [`FileStore`] trait and its local-disk
//! implementation [`DiskStore`] (an object store can implement the same
//! trait later).
//!
//! A file is stored under its [`FileId`] only, never under the name the
//! client gave; the name, type and size live in a metadata record beside it.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::slot::FileId;

/// A stream of body chunks.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// What is kept with a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// The name the uploader gave (shown in `Content-Disposition`).
    pub filename: String,
    /// The media type the file is served with.
    pub content_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Unix time of the upload.
    pub uploaded: u64,
}

/// Why a file could not be stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PutError {
    /// The id is taken: the file was uploaded already, or an upload of it
    /// is running (a slot is good for one PUT).
    #[error("file exists")]
    Exists,
    /// The body was longer than announced; nothing was kept.
    #[error("body longer than {0} bytes")]
    TooLong(u64),
    /// The body ended (or failed) before the announced size; nothing was kept.
    #[error("body shorter than announced: {0}")]
    Incomplete(String),
    /// The storage failed.
    #[error("storage: {0}")]
    Io(#[from] io::Error),
}

/// Storage of uploaded files.
#[async_trait]
pub trait FileStore: Send + Sync + std::fmt::Debug {
    /// Stores `body` as file `id`, streaming: it must be exactly
    /// `meta.size` bytes, or nothing is kept. Once this returns `Ok`, `get`
    /// finds the whole file; before, it finds nothing.
    async fn put(&self, id: &FileId, meta: &FileMeta, body: ByteStream) -> Result<(), PutError>;
    /// The metadata and contents of file `id`, if it is stored.
    async fn get(&self, id: &FileId) -> io::Result<Option<(FileMeta, ByteStream)>>;
    /// Removes file `id`; false if there was none.
    async fn delete(&self, id: &FileId) -> io::Result<bool>;
    /// The files uploaded before `before`.
    async fn list_expired(&self, before: SystemTime) -> io::Result<Vec<FileId>>;
}

/// Files in one local directory: `<id>` (the contents, present only once
/// complete), `<id>.meta` (JSON [`FileMeta`]) and, while an upload runs,
/// `<id>.part`.
#[derive(Clone, Debug)]
pub struct DiskStore {
    dir: PathBuf,
}

/// Unfinished uploads older than this are leftovers of a crash.
const STALE_PART: Duration = Duration::from_secs(24 * 3600);

impl DiskStore {
    /// A store in `dir`, created if missing (mode 0700 on Unix).
    pub fn open(dir: &Path) -> io::Result<DiskStore> {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(DiskStore {
            dir: dir.to_owned(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    // Every path is the directory joined with an id (32 hex digits) and a
    // fixed suffix: nothing a client sends becomes part of a path.
    fn data(&self, id: &FileId) -> PathBuf {
        self.dir.join(id.as_str())
    }
    fn meta(&self, id: &FileId) -> PathBuf {
        self.dir.join(format!("{id}.meta"))
    }
    fn part(&self, id: &FileId) -> PathBuf {
        self.dir.join(format!("{id}.part"))
    }

    async fn write_body(
        file: &mut tokio::fs::File,
        size: u64,
        mut body: ByteStream,
    ) -> Result<(), PutError> {
        let mut written = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| PutError::Incomplete(e.to_string()))?;
            let after = written.saturating_add(chunk.len() as u64);
            if after > size {
                // Not one byte beyond the announced size is written.
                return Err(PutError::TooLong(size));
            }
            file.write_all(&chunk).await?;
            written = after;
        }
        if written != size {
            return Err(PutError::Incomplete(format!("{written} of {size} bytes")));
        }
        file.sync_all().await?;
        Ok(())
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[async_trait]
impl FileStore for DiskStore {
    async fn put(&self, id: &FileId, meta: &FileMeta, body: ByteStream) -> Result<(), PutError> {
        let (data, part) = (self.data(id), self.part(id));
        if tokio::fs::try_exists(&data).await? {
            return Err(PutError::Exists);
        }
        // `create_new`: a second PUT of the same slot while the first runs
        // fails here instead of writing into the same file.
        let mut file = match tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part)
            .await
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(PutError::Exists),
            Err(e) => return Err(e.into()),
        };
        let written = Self::write_body(&mut file, meta.size, body).await;
        drop(file);
        let done = match written {
            Ok(()) => {
                let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
                match tokio::fs::write(self.meta(id), json).await {
                    // A hard link fails if the name exists (a rename would
                    // replace it): the first complete upload wins for good.
                    Ok(()) => match tokio::fs::hard_link(&part, &data).await {
                        Ok(()) => Ok(()),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(PutError::Exists),
                        Err(e) => Err(e.into()),
                    },
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&part).await;
        done
    }

    async fn get(&self, id: &FileId) -> io::Result<Option<(FileMeta, ByteStream)>> {
        let file = match tokio::fs::File::open(self.data(id)).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta: FileMeta = serde_json::from_slice(&tokio::fs::read(self.meta(id)).await?)
            .map_err(io::Error::other)?;
        let stream = futures::stream::unfold(file, |mut f| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 64 * 1024];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), f))
                }
                Err(e) => Some((Err(e), f)),
            }
        });
        Ok(Some((meta, Box::pin(stream))))
    }

    async fn delete(&self, id: &FileId) -> io::Result<bool> {
        let existed = match tokio::fs::remove_file(self.data(id)).await {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        for p in [self.meta(id), self.part(id)] {
            match tokio::fs::remove_file(p).await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(existed)
    }

    async fn list_expired(&self, before: SystemTime) -> io::Result<Vec<FileId>> {
        let mut out = Vec::new();
        let mut dir = tokio::fs::read_dir(&self.dir).await?;
        let cutoff = unix(before);
        let stale_part = unix(SystemTime::now()).saturating_sub(STALE_PART.as_secs());
        while let Some(entry) = dir.next_entry().await? {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let (id, limit) = match name.strip_suffix(".part") {
                Some(id) => (id, stale_part),
                None => (name, cutoff),
            };
            let Some(id) = FileId::parse(id) else {
                continue;
            };
            let modified = entry.metadata().await?.modified()?;
            if unix(modified) < limit {
                out.push(id);
            }
        }
        out.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        out.dedup();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn body(chunks: &[&'static [u8]]) -> ByteStream {
        let v: Vec<io::Result<Bytes>> = chunks.iter().map(|c| Ok(Bytes::from(*c))).collect();
        Box::pin(futures::stream::iter(v))
    }

    fn meta(size: u64) -> FileMeta {
        FileMeta {
            filename: "a.txt".into(),
            content_type: "text/plain".into(),
            size,
            uploaded: 1,
        }
    }

    async fn read(s: &DiskStore, id: &FileId) -> Option<(FileMeta, Vec<u8>)> {
        let (m, mut st) = s.get(id).await.unwrap()?;
        let mut v = Vec::new();
        while let Some(c) = st.next().await {
            v.extend_from_slice(&c.unwrap());
        }
        Some((m, v))
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn put_get_once_delete() {
        let tmp = tempfile::tempdir().unwrap();
        let s = DiskStore::open(&tmp.path().join("up")).unwrap();
        let id = FileId::random();
        s.put(&id, &meta(5), body(&[b"he", b"llo"])).await.unwrap();
        assert_eq!(read(&s, &id).await, Some((meta(5), b"hello".to_vec())));
        assert_eq!(names(s.dir()), vec![id.to_string(), format!("{id}.meta")]);
        // A slot is good for one upload.
        assert!(matches!(
            s.put(&id, &meta(5), body(&[b"world"])).await,
            Err(PutError::Exists)
        ));
        assert_eq!(read(&s, &id).await.unwrap().1, b"hello");
        assert!(s.delete(&id).await.unwrap());
        assert!(!s.delete(&id).await.unwrap());
        assert_eq!(read(&s, &id).await, None);
        assert!(names(s.dir()).is_empty());
    }

    #[tokio::test]
    async fn wrong_length_keeps_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let s = DiskStore::open(tmp.path()).unwrap();
        let id = FileId::random();
        assert!(matches!(
            s.put(&id, &meta(4), body(&[b"he", b"llo"])).await,
            Err(PutError::TooLong(4))
        ));
        assert!(matches!(
            s.put(&id, &meta(6), body(&[b"he", b"llo"])).await,
            Err(PutError::Incomplete(_))
        ));
        let failing: ByteStream = Box::pin(futures::stream::iter(vec![
            Ok(Bytes::from_static(b"he")),
            Err(io::Error::other("reset")),
        ]));
        assert!(matches!(
            s.put(&id, &meta(5), failing).await,
            Err(PutError::Incomplete(_))
        ));
        assert!(names(s.dir()).is_empty(), "{:?}", names(s.dir()));
        // The slot can still be used.
        s.put(&id, &meta(5), body(&[b"hello"])).await.unwrap();
    }

    #[tokio::test]
    async fn lists_expired_files() {
        let tmp = tempfile::tempdir().unwrap();
        let s = DiskStore::open(tmp.path()).unwrap();
        let id = FileId::random();
        s.put(&id, &meta(1), body(&[b"x"])).await.unwrap();
        std::fs::write(tmp.path().join("not-an-id"), b"").unwrap();
        let past = SystemTime::now() - Duration::from_secs(3600);
        assert!(s.list_expired(past).await.unwrap().is_empty());
        let future = SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(s.list_expired(future).await.unwrap(), vec![id]);
    }
}
