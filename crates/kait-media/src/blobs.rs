//! Where attachment bytes live: local files under the data dir, or an S3-compatible bucket,
//! both through `object_store`. Uploads stream in parts (memory stays at a few parts however
//! large the blob), hashed and checked against their declared type as they pass; reads stream
//! out, a byte range at a time.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, WriteMultipart,
};
use sha2::{Digest, Sha256};

use crate::sniff::{self, Mismatch, SNIFF_BYTES};

/// Local parts: written to the staging file as they fill.
const LOCAL_PART_BYTES: usize = 1024 * 1024;
/// S3 parts: 5 MiB is the smallest part S3 accepts (but the last).
const S3_PART_BYTES: usize = 5 * 1024 * 1024;
/// Parts in flight while the next one fills: with the one filling, what an upload holds.
const PARTS_IN_FLIGHT: usize = 1;
/// Local reads hand out chunks of this size, read by tokio's file (object_store's own
/// stream reads 8 KiB at a time, each a blocking task of its own).
const LOCAL_READ_CHUNK: usize = 64 * 1024;

/// The blob store's failures. Callers answer them 503 (the store is down) or 404.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("no such blob")]
    NotFound,
    #[error("the blob store failed: {0}")]
    Store(#[from] object_store::Error),
    #[error("{0}")]
    Config(String),
    #[error("the blob is larger than {0} bytes")]
    TooLarge(u64),
}

/// Why an upload was not stored (nothing of it is kept).
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the upload is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    Mismatch(#[from] Mismatch),
    #[error("the upload is empty")]
    Empty,
    #[error("the upload was cut off: {0}")]
    Body(String),
    #[error("the blob store failed: {0}")]
    Store(#[from] object_store::Error),
}

/// A blob as stored: its length and SHA-256 (lower-case hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub size: u64,
    pub sha256: String,
}

/// What a `--blob-url` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobUrl {
    S3,
    Directory(std::path::PathBuf),
}

/// Checks a `--blob-url` before anything starts: `s3://bucket[/prefix]` or `file:///path`.
pub fn check_url(url: &str) -> Result<BlobUrl, String> {
    let parsed = url::Url::parse(url).map_err(|error| format!("`{url}`: {error}"))?;
    match parsed.scheme() {
        "s3" if parsed.host_str().is_some_and(|host| !host.is_empty()) => Ok(BlobUrl::S3),
        "file" if parsed.host_str().is_none_or(str::is_empty) => parsed
            .to_file_path()
            .map(BlobUrl::Directory)
            .map_err(|()| format!("`{url}`: not an absolute path")),
        _ => Err(format!(
            "`{url}`: expected s3://bucket[/prefix] or file:///absolute/path"
        )),
    }
}

/// The configured blob store.
#[derive(Clone, Debug)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    part_bytes: usize,
    shared: bool,
    description: String,
}

impl Blobs {
    /// Files under `dir` (created if missing), written through a staging file and synced
    /// before an upload is answered.
    pub fn local(dir: &std::path::Path) -> Result<Self, BlobError> {
        std::fs::create_dir_all(dir).map_err(|error| {
            BlobError::Config(format!(
                "creating the blob directory {}: {error}",
                dir.display()
            ))
        })?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir)?
            .with_automatic_cleanup(true)
            .with_fsync(true);
        Ok(Self {
            store: Arc::new(store),
            prefix: Path::default(),
            part_bytes: LOCAL_PART_BYTES,
            shared: false,
            description: format!("files under {}", dir.display()),
        })
    }

    /// An S3-compatible bucket: `s3://bucket[/prefix]`, with credentials, region and endpoint
    /// from the usual `AWS_*` environment variables (`AWS_ENDPOINT_URL` for a server other
    /// than Amazon's; plain `http://` endpoints are allowed for a local server).
    pub fn s3(url: &str) -> Result<Self, BlobError> {
        let parsed =
            url::Url::parse(url).map_err(|error| BlobError::Config(format!("`{url}`: {error}")))?;
        if parsed.scheme() != "s3" || parsed.host_str().is_none_or(str::is_empty) {
            return Err(BlobError::Config(format!(
                "`{url}`: expected s3://bucket or s3://bucket/prefix"
            )));
        }
        let bucket = parsed.host_str().unwrap_or_default().to_owned();
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(&bucket);
        let endpoint = std::env::var("AWS_ENDPOINT_URL")
            .or_else(|_| std::env::var("AWS_ENDPOINT"))
            .ok();
        if let Some(endpoint) = &endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            builder = builder.with_region("us-east-1");
        }
        let store = builder.build()?;
        let prefix = Path::from(parsed.path().trim_matches('/'));
        Ok(Self {
            store: Arc::new(store),
            prefix,
            part_bytes: S3_PART_BYTES,
            shared: true,
            description: match endpoint {
                Some(endpoint) => format!("bucket {url} at {endpoint}"),
                None => format!("bucket {url}"),
            },
        })
    }

    /// `--blob-url` if given (`s3://bucket/prefix`, or `file:///path`: a directory that,
    /// on several nodes, they all mount), else files under `data_dir/blobs`.
    pub fn open(url: Option<&str>, data_dir: &std::path::Path) -> Result<Self, BlobError> {
        match url {
            Some(url) => match check_url(url).map_err(BlobError::Config)? {
                BlobUrl::S3 => Self::s3(url),
                BlobUrl::Directory(path) => {
                    let mut blobs = Self::local(&path)?;
                    // The operator names it as the nodes' common directory.
                    blobs.shared = true;
                    Ok(blobs)
                }
            },
            None => Self::local(&data_dir.join("blobs")),
        }
    }

    /// Whether every node of a cluster sees the same blobs (a bucket; not a node's files).
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    pub fn describe(&self) -> &str {
        &self.description
    }

    fn path(&self, id: &str) -> Path {
        self.prefix.clone().join(id)
    }

    /// Stores `body` under `id`: refused past `limit` bytes, or if its first bytes are not
    /// `declared` ([`sniff::check`]); otherwise its size and SHA-256. A refused or broken
    /// upload leaves nothing behind.
    pub async fn store<E: std::fmt::Display>(
        &self,
        id: &str,
        declared: &str,
        mut body: impl futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
        limit: u64,
    ) -> Result<Stored, UploadError> {
        let upload = self.store.put_multipart(&self.path(id)).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_bytes);
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut head: Vec<u8> = Vec::new();
        let mut checked = false;
        let failed = loop {
            let chunk = match body.next().await {
                None => break None,
                Some(Ok(chunk)) => chunk,
                Some(Err(error)) => break Some(UploadError::Body(error.to_string())),
            };
            size += chunk.len() as u64;
            if size > limit {
                break Some(UploadError::TooLarge { limit });
            }
            if !checked {
                let wanted = SNIFF_BYTES - head.len();
                head.extend_from_slice(&chunk[..chunk.len().min(wanted)]);
                if head.len() == SNIFF_BYTES {
                    checked = true;
                    if let Err(mismatch) = sniff::check(declared, &head) {
                        break Some(mismatch.into());
                    }
                }
            }
            hasher.update(&chunk);
            if let Err(error) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                break Some(error.into());
            }
            writer.write(&chunk);
        };
        let failed = failed.or_else(|| match (size, checked) {
            (0, _) => Some(UploadError::Empty),
            (_, false) => sniff::check(declared, &head).err().map(UploadError::from),
            _ => None,
        });
        if let Some(error) = failed {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(%abort, id, "aborting a refused upload failed");
            }
            return Err(error);
        }
        writer.finish().await?;
        Ok(Stored {
            size,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// Bytes `start..=end` of blob `id` (all of it when `None`), as a stream.
    pub async fn read(
        &self,
        id: &str,
        range: Option<(u64, u64)>,
    ) -> Result<BoxStream<'static, io::Result<Bytes>>, BlobError> {
        let options = GetOptions {
            range: range.map(|(start, end)| GetRange::Bounded(start..end + 1)),
            ..Default::default()
        };
        let result = match self.store.get_opts(&self.path(id), options).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Err(BlobError::NotFound),
            Err(error) => return Err(error.into()),
        };
        let range = result.range.clone();
        match result.payload {
            GetResultPayload::File(file, _) => {
                use tokio::io::{AsyncReadExt, AsyncSeekExt};
                let mut file = tokio::fs::File::from_std(file);
                file.seek(io::SeekFrom::Start(range.start))
                    .await
                    .map_err(|error| BlobError::Config(format!("seeking in a blob: {error}")))?;
                let reader = file.take(range.end - range.start);
                Ok(tokio_util_stream(reader))
            }
            GetResultPayload::Stream(stream) => Ok(stream.map_err(io::Error::other).boxed()),
        }
    }

    /// All of blob `id`, if it is at most `max` bytes (inline attachments).
    pub async fn read_all(&self, id: &str, max: u64) -> Result<Bytes, BlobError> {
        let mut stream = self.read(id, None).await?;
        let mut all = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| BlobError::Config(error.to_string()))?;
            if (all.len() + chunk.len()) as u64 > max {
                return Err(BlobError::TooLarge(max));
            }
            all.extend_from_slice(&chunk);
        }
        Ok(all.into())
    }

    /// Deletes blob `id`; one already gone is not an error.
    pub async fn delete(&self, id: &str) -> Result<(), BlobError> {
        match self.store.delete(&self.path(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

/// A reader as a stream of chunks of [`LOCAL_READ_CHUNK`] bytes.
fn tokio_util_stream(
    reader: impl tokio::io::AsyncRead + Send + Unpin + 'static,
) -> BoxStream<'static, io::Result<Bytes>> {
    futures_util::stream::unfold(reader, |mut reader| async move {
        use tokio::io::AsyncReadExt;
        let mut buffer = bytes::BytesMut::with_capacity(LOCAL_READ_CHUNK);
        match reader.read_buf(&mut buffer).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buffer.freeze()), reader)),
            Err(error) => Some((Err(error), reader)),
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(
        data: &[u8],
        size: usize,
    ) -> impl futures_util::Stream<Item = Result<Bytes, String>> + Unpin {
        let parts: Vec<Result<Bytes, String>> = data
            .chunks(size)
            .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
            .collect();
        futures_util::stream::iter(parts)
    }

    async fn read_to_vec(blobs: &Blobs, id: &str, range: Option<(u64, u64)>) -> Vec<u8> {
        let mut stream = blobs.read(id, range).await.unwrap();
        let mut all = Vec::new();
        while let Some(chunk) = stream.next().await {
            all.extend_from_slice(&chunk.unwrap());
        }
        all
    }

    #[tokio::test]
    async fn a_blob_streams_in_hashed_and_out_by_range() {
        let dir = std::env::temp_dir().join(format!("kait-blobs-{}", std::process::id()));
        let blobs = Blobs::local(&dir).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|n| (n % 251) as u8).collect();
        let stored = blobs
            .store(
                "att_a",
                "application/octet-stream",
                chunks(&data, 70_000),
                10_000_000,
            )
            .await
            .unwrap();
        assert_eq!(stored.size, data.len() as u64);
        assert_eq!(stored.sha256, hex::encode(Sha256::digest(&data)));
        assert_eq!(read_to_vec(&blobs, "att_a", None).await, data);
        assert_eq!(
            read_to_vec(&blobs, "att_a", Some((1_000_000, 1_000_009))).await,
            data[1_000_000..1_000_010]
        );
        assert_eq!(
            blobs.read_all("att_a", 10_000_000).await.unwrap().len(),
            data.len()
        );
        assert!(matches!(
            blobs.read_all("att_a", 10).await,
            Err(BlobError::TooLarge(10))
        ));
        blobs.delete("att_a").await.unwrap();
        blobs.delete("att_a").await.unwrap();
        assert!(matches!(
            blobs.read("att_a", None).await,
            Err(BlobError::NotFound)
        ));

        // Refused uploads leave nothing behind.
        let too_large = blobs
            .store(
                "att_b",
                "application/octet-stream",
                chunks(&data, 70_000),
                1_000_000,
            )
            .await;
        assert!(matches!(
            too_large,
            Err(UploadError::TooLarge { limit: 1_000_000 })
        ));
        let png = blobs
            .store(
                "att_c",
                "image/jpeg",
                chunks(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 3),
                1_000,
            )
            .await;
        assert!(matches!(png, Err(UploadError::Mismatch(_))));
        let empty = blobs
            .store("att_d", "text/plain", chunks(b"", 3), 1_000)
            .await;
        assert!(matches!(empty, Err(UploadError::Empty)));
        let broken = blobs
            .store(
                "att_e",
                "text/plain",
                futures_util::stream::iter(vec![
                    Ok(Bytes::from_static(b"abc")),
                    Err("reset".to_owned()),
                ]),
                1_000,
            )
            .await;
        assert!(matches!(broken, Err(UploadError::Body(_))));
        for id in ["att_b", "att_c", "att_d", "att_e"] {
            assert!(
                matches!(blobs.read(id, None).await, Err(BlobError::NotFound)),
                "{id}"
            );
        }
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn blob_urls_name_a_bucket_or_a_directory() {
        assert_eq!(check_url("s3://media/kait"), Ok(BlobUrl::S3));
        assert_eq!(
            check_url("file:///mnt/kait-blobs"),
            Ok(BlobUrl::Directory("/mnt/kait-blobs".into()))
        );
        for bad in [
            "s3://",
            "file://host/x",
            "http://x/y",
            "relative/path",
            "gs://b",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_s3_urls_name_a_bucket() {
        for bad in ["s3://", "http://bucket/x", "bucket"] {
            assert!(matches!(Blobs::s3(bad), Err(BlobError::Config(_))), "{bad}");
        }
        let bucket = Blobs::s3("s3://media/kait").unwrap();
        assert!(bucket.is_shared());
        assert_eq!(bucket.path("att_1").as_ref(), "kait/att_1");
    }
}
