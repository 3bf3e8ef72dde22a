//! A cold tier in an S3-compatible object store (AWS S3, Garage, MinIO, ...).
//!
//! It exists so that checkpoints outlive the worker that made them and can be restored on any
//! machine. Everything the page store writes here is immutable: packs are named by their content
//! and manifests by a unique key, so no write depends on conditional PUT (which Garage lacks) and a
//! retried PUT is harmless.
//!
//! Transient failures (connection refused or reset, timeouts, 5xx, throttling) are retried here with
//! capped exponential backoff and a bounded number of attempts; the SDK's own retries are off so
//! that one place decides, logs and counts them. When the store stays unreachable the error names
//! the endpoint and bucket, so an operator knows which `[cold]` setting to look at.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use tracing::{debug, warn};

use super::{ColdStorage, ObjectMeta};
use crate::config::S3Config;
use crate::error::{Error, Result};

/// Attempts per request when the configuration does not say.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub struct S3Storage {
    client: aws_sdk_s3::Client,
    endpoint: String,
    bucket: String,
    /// Prepended to every key; empty or ending in `/`.
    prefix: String,
    max_attempts: u32,
    /// Requests that were retried after a transient failure.
    pub retries: AtomicU64,
}

/// How one failed request should be handled.
enum Failure {
    NotFound,
    Transient(String),
    Permanent(String),
}

fn classify<E>(err: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let text = DisplayErrorContext(err).to_string();
    match err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            Failure::Transient(text)
        }
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("");
            if status == 404 || code == "NoSuchKey" || code == "NotFound" {
                Failure::NotFound
            } else if status >= 500
                || status == 429
                || matches!(code, "SlowDown" | "RequestTimeout" | "InternalError")
            {
                Failure::Transient(text)
            } else {
                Failure::Permanent(text)
            }
        }
        _ => Failure::Permanent(text),
    }
}

impl S3Storage {
    pub fn new(config: &S3Config) -> Result<Self> {
        if config.bucket.is_empty() || config.endpoint.is_empty() {
            return Err(Error::Config(
                "[cold] kind = \"s3\" needs endpoint and bucket".into(),
            ));
        }
        let creds = Credentials::new(
            &config.access_key_id,
            &config.secret_access_key,
            None,
            None,
            "pico.toml",
        );
        let sdk = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&config.endpoint)
            .region(Region::new(config.region.clone()))
            .credentials_provider(creds)
            .force_path_style(true)
            // Content-addressed objects are verified on read; Garage does not need the checksums.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(120))
                    .build(),
            )
            .build();
        let prefix = match config.prefix.as_deref() {
            None | Some("") => String::new(),
            Some(p) if p.ends_with('/') => p.to_string(),
            Some(p) => format!("{p}/"),
        };
        Ok(S3Storage {
            client: aws_sdk_s3::Client::from_conf(sdk),
            endpoint: config.endpoint.clone(),
            bucket: config.bucket.clone(),
            prefix,
            max_attempts: config.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS).max(1),
            retries: AtomicU64::new(0),
        })
    }

    /// `endpoint/bucket/prefix`, for logs and errors.
    pub fn describe(&self) -> String {
        format!("{}/{}/{}", self.endpoint, self.bucket, self.prefix)
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn error(&self, op: &'static str, key: &str, attempts: u32, message: String) -> Error {
        Error::Cold {
            store: format!("S3 endpoint {} bucket {}", self.endpoint, self.bucket),
            op,
            key: key.to_string(),
            attempts,
            message,
        }
    }

    /// Runs one request, retrying transient failures with capped exponential backoff.
    async fn retry<T, E, F, Fut>(&self, op: &'static str, key: &str, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let err = match f().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            match classify(&err) {
                Failure::NotFound => return Err(Error::ObjectNotFound(key.to_string())),
                Failure::Permanent(m) => return Err(self.error(op, key, attempt, m)),
                Failure::Transient(m) if attempt >= self.max_attempts => {
                    return Err(self.error(op, key, attempt, m))
                }
                Failure::Transient(m) => {
                    warn!(op, key, attempt, error = %m, "S3 request failed; retrying");
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    attempt += 1;
                }
            }
        }
    }

    async fn read_body(&self, op: &'static str, key: &str, body: ByteStream) -> Result<Vec<u8>> {
        body.collect()
            .await
            .map(|b| b.into_bytes().to_vec())
            .map_err(|e| self.error(op, key, 1, DisplayErrorContext(&e).to_string()))
    }

    /// GETs `key`, or the HTTP `range` of it; `None` when the range starts past the object's end
    /// (416). The body is read inside the retry so that a connection cut mid-body is retried too.
    async fn get_object(&self, key: &str, range: Option<String>) -> Result<Option<Vec<u8>>> {
        let full = self.full_key(key);
        let mut attempt = 0;
        let started = std::time::Instant::now();
        loop {
            attempt += 1;
            let out = self
                .retry("GET", key, || {
                    self.client
                        .get_object()
                        .bucket(&self.bucket)
                        .key(&full)
                        .set_range(range.clone())
                        .send()
                })
                .await;
            let out = match out {
                Ok(o) => o,
                Err(Error::Cold { ref message, .. })
                    if range.is_some() && message.contains("InvalidRange") =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            };
            let headers_ms = started.elapsed().as_secs_f64() * 1000.0;
            match self.read_body("GET", key, out.body).await {
                Ok(data) => {
                    debug!(
                        key,
                        range = range.as_deref().unwrap_or("all"),
                        bytes = data.len(),
                        headers_ms,
                        ms = started.elapsed().as_secs_f64() * 1000.0,
                        "S3 GET"
                    );
                    return Ok(Some(data));
                }
                Err(e) if attempt >= self.max_attempts => return Err(e),
                Err(e) => {
                    warn!(key, ranged = range.is_some(), error = %e, "S3 GET body failed; retrying")
                }
            }
        }
    }
}

/// Between half and all of `d`, so that many clients that failed together do not retry together.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d / 2 + d.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

impl ColdStorage for S3Storage {
    async fn put(&self, key: &str, data: bytes::Bytes) -> Result<()> {
        let full = self.full_key(key);
        self.retry("PUT", key, || {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&full)
                .body(ByteStream::from(data.clone()))
                .send()
        })
        .await?;
        debug!(key, bytes = data.len(), "S3 PUT");
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        Ok(self.get_object(key, None).await?.unwrap_or_default())
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let range = format!("bytes={}-{}", offset, offset + len - 1);
        let Some(mut data) = self.get_object(key, Some(range)).await? else {
            // The range starts at or past the end of the object.
            return Ok(Vec::new());
        };
        data.truncate(len as usize);
        Ok(data)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let full = self.full_key(prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .retry("LIST", prefix, || {
                    self.client
                        .list_objects_v2()
                        .bucket(&self.bucket)
                        .prefix(&full)
                        .set_continuation_token(token.clone())
                        .send()
                })
                .await?;
            for obj in page.contents() {
                let Some(key) = obj.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    continue;
                };
                out.push(ObjectMeta {
                    key: key.to_string(),
                    size: obj.size().unwrap_or(0).max(0) as u64,
                });
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let full = self.full_key(key);
        match self
            .retry("DELETE", key, || {
                self.client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(&full)
                    .send()
            })
            .await
        {
            Ok(_) | Err(Error::ObjectNotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
