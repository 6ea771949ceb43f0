//! S3 through the official `aws-sdk-s3`: `s3://BUCKET/KEY` names, one client per bucket fed by
//! the same [`SdkConfig`] (and so the same cached credentials, profile and role) as Kinesis
//! Video, and the bridge from the writer's synchronous [`crate::destination::Destination`] calls
//! to the SDK's futures.
//!
//! Endpoint: `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`, as every AWS SDK reads them; with
//! either, path-style addressing (`http://host/bucket/key`), which S3-compatible stores expect.
//! Region: `--s3-region`, else the bucket's own region as the AWS CLI finds it (the
//! `x-amz-bucket-region` header of HeadBucket), else the SDK chain's. Throttling (SlowDown, 503)
//! and network errors are retried by the SDK's standard retry mode, with backoff.
//!
//! Runs that touch S3 use a multi-threaded runtime: a call that must wait (a third part while two
//! are in flight, completing an object, saving the state) blocks in place, and the SDK's
//! connections go on being driven by the other workers.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use aws_config::{Region, SdkConfig};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::error::Error;

/// An `s3://BUCKET/KEY` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub key: String,
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// Whether a `-o` or `--state-file` value names S3.
pub fn is_s3(path: &Path) -> bool {
    path.to_str().is_some_and(|s| s.starts_with("s3://"))
}

/// Splits `s3://BUCKET/KEY`; `None` for anything else (a local path).
pub fn parse(path: &Path) -> Option<S3Url> {
    let rest = path.to_str()?.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/')?;
    Some(S3Url {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
    })
}

/// Checks an `s3://` value of `flag`; a usage error naming the flag when it is malformed.
pub fn check(path: &Path, flag: &str) -> Result<S3Url, Error> {
    let usage = |why: &str| {
        Error::usage(
            format!("invalid value '{}' for {flag}: {why}", path.display()),
            Some("expected s3://BUCKET/KEY, e.g. s3://my-archive/cam1/cam1.mkv".into()),
        )
    };
    let url = parse(path).ok_or_else(|| usage("no key after the bucket"))?;
    let bucket_ok = (3..=63).contains(&url.bucket.len())
        && url.bucket.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'_'
        });
    if !bucket_ok {
        return Err(usage("not a bucket name"));
    }
    if url.key.is_empty() || url.key.ends_with('/') {
        return Err(usage("the key is empty or names a folder"));
    }
    if url.key.len() > 1024 {
        return Err(usage("the key is longer than 1024 bytes"));
    }
    Ok(url)
}

/// The S3 side of a run: a client for every bucket it uses, each in the bucket's region.
struct Context {
    clients: Mutex<HashMap<String, Client>>,
}

static CONTEXT: OnceLock<Context> = OnceLock::new();

/// The client for `bucket`, once [`connect`] checked it.
pub fn client(bucket: &str) -> io::Result<Client> {
    CONTEXT
        .get()
        .and_then(|c| c.clients.lock().expect("not poisoned").get(bucket).cloned())
        .ok_or_else(|| io::Error::other(format!("S3 bucket {bucket} was not checked at start")))
}

/// How the S3 clients are made: the endpoint, and `--s3-region`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`.
    pub endpoint_url: Option<String>,
    /// `--s3-region`.
    pub region: Option<String>,
}

/// Makes a client for each of `buckets`, in its own region, and checks each with HeadBucket
/// before anything is downloaded: refused credentials or signatures are exit 3, a missing bucket
/// or an endpoint that cannot be reached a one-line error, and nothing is written.
pub async fn connect(sdk: &SdkConfig, settings: &Settings, buckets: &[&str]) -> Result<(), Error> {
    let context = CONTEXT.get_or_init(|| Context {
        clients: Mutex::new(HashMap::new()),
    });
    for bucket in buckets {
        if context
            .clients
            .lock()
            .expect("not poisoned")
            .contains_key(*bucket)
        {
            continue;
        }
        let client = bucket_client(sdk, settings, bucket).await?;
        context
            .clients
            .lock()
            .expect("not poisoned")
            .insert((*bucket).to_owned(), client);
    }
    Ok(())
}

fn build(sdk: &SdkConfig, settings: &Settings, region: Option<String>) -> Client {
    let mut config = aws_sdk_s3::config::Builder::from(sdk)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(8)
                .with_initial_backoff(Duration::from_millis(200))
                .with_max_backoff(Duration::from_secs(20)),
        )
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .build(),
        );
    // Only S3's own variables choose the S3 endpoint: `--endpoint-url` is Kinesis Video's.
    config.set_endpoint_url(settings.endpoint_url.clone());
    if settings.endpoint_url.is_some() {
        config = config.force_path_style(true);
    }
    if let Some(region) = region {
        config = config.region(Region::new(region));
    } else if sdk.region().is_none() {
        config = config.region(Region::from_static("us-east-1"));
    }
    Client::from_conf(config.build())
}

async fn bucket_client(
    sdk: &SdkConfig,
    settings: &Settings,
    bucket: &str,
) -> Result<Client, Error> {
    let client = build(sdk, settings, settings.region.clone());
    let first = client.head_bucket().bucket(bucket).send().await;
    let found = match &first {
        Ok(out) => out.bucket_region().map(str::to_owned),
        Err(e) => e
            .raw_response()
            .and_then(|r| r.headers().get("x-amz-bucket-region"))
            .map(str::to_owned),
    };
    let current = client.config().region().map(|r| r.as_ref().to_owned());
    // The AWS CLI's way: HeadBucket answers with the bucket's region, also when it refuses a
    // request signed for another one; ask again there.
    let (client, result) = match found {
        Some(region) if settings.region.is_none() && current.as_deref() != Some(&region) => {
            tracing::debug!(bucket, region, "S3 bucket region found");
            let client = build(sdk, settings, Some(region));
            let result = client.head_bucket().bucket(bucket).send().await.map(|_| ());
            (client, result)
        }
        _ => (client, first.map(|_| ())),
    };
    match result {
        Ok(()) => Ok(client),
        Err(e) => Err(head_bucket_error(bucket, settings, e)),
    }
}

fn head_bucket_error<E>(bucket: &str, settings: &Settings, e: SdkError<E, HttpResponse>) -> Error
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let at = settings
        .endpoint_url
        .as_deref()
        .map(|u| format!(" at {u}"))
        .unwrap_or_default();
    match status(&e) {
        Some(403) | Some(401) => Error::Auth {
            message: format!(
                "S3{at} refused the credentials for bucket {bucket} ({})",
                describe(&e)
            ),
            hint: Some(
                "check the access key and secret, and that the identity may use the bucket (see the IAM policy in docs/cli.md)"
                    .into(),
            ),
        },
        Some(404) => Error::usage(
            format!("S3 bucket {bucket} does not exist{at}"),
            Some("create the bucket first, or fix -o / --state-file".into()),
        ),
        Some(301) => Error::usage(
            format!("S3 bucket {bucket} is in another region and did not say which"),
            Some("give --s3-region".into()),
        ),
        _ => Error::RetriesExhausted {
            attempts: 8,
            last: format!("cannot reach S3{at} for bucket {bucket}: {}", describe(&e)),
        },
    }
}

/// The HTTP status of a failed call, when there was a response.
pub fn status<E>(e: &SdkError<E, HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// The service's error code (`NoSuchUpload`, `PreconditionFailed`, ...), when it sent one.
pub fn code<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

/// A failed call on one line: the code and message, or the transport error with its causes.
pub fn describe<E>(e: &SdkError<E, HttpResponse>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    if let Some(s) = e.as_service_error() {
        let code = s.code().unwrap_or("error");
        let status = status(e).map(|s| format!("HTTP {s} ")).unwrap_or_default();
        return match s.message() {
            Some(m) => format!("{status}{code}: {m}"),
            None => format!("{status}{code}"),
        };
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let t = cause.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = cause.source();
    }
    text
}

/// Another run took over what this run was writing: it advanced the S3 state this run read, or
/// aborted this run's upload. Exit 6, and nothing more is written.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Superseded(pub String);

/// An `io::Error` carrying [`Superseded`].
pub fn superseded(message: String) -> io::Error {
    io::Error::other(Superseded(message))
}

/// Whether an error is (or was caused by) [`Superseded`].
pub fn is_superseded(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Superseded>())
}

/// An S3 failure as an `io::Error`, for the writer's and the state's callers.
pub fn io_error<E>(what: &str, e: SdkError<E, HttpResponse>) -> io::Error
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let kind = match status(&e) {
        Some(401 | 403) => io::ErrorKind::PermissionDenied,
        Some(404) => io::ErrorKind::NotFound,
        Some(412) => io::ErrorKind::AlreadyExists,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("{what}: {}", describe(&e)))
}

/// Runs `fut` to completion from synchronous code inside the (multi-threaded) runtime: on one
/// of its workers, while this thread waits. Not `block_in_place`: a fleet's streams run on a
/// `LocalSet`, where that is refused.
pub fn block<F>(fut: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    try_block(fut).expect("the runtime runs the call to its end while this thread waits")
}

/// [`block`], or `None` when the runtime is shutting down and drops the call.
pub fn try_block<F>(fut: F) -> Option<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    block_on(&tokio::runtime::Handle::try_current().ok()?, fut)
}

/// [`try_block`] on `runtime`, from any thread (the state's own, say).
pub fn block_on<F>(runtime: &tokio::runtime::Handle, fut: F) -> Option<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let url = parse(Path::new("s3://bkt/a/b.mkv")).unwrap();
        assert_eq!(url.bucket, "bkt");
        assert_eq!(url.key, "a/b.mkv");
        assert_eq!(url.to_string(), "s3://bkt/a/b.mkv");
        assert!(is_s3(Path::new("s3://bkt/k")));
        assert!(!is_s3(Path::new("./s3:/bkt/k")));
        assert_eq!(parse(Path::new("out.mkv")), None);
        for bad in [
            "s3://bkt",
            "s3://bkt/",
            "s3://B/k",
            "s3://ab/k",
            "s3://bkt/dir/",
        ] {
            let e = check(Path::new(bad), "-o").unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(e.to_string().contains("-o"), "{e}");
        }
        assert!(check(Path::new("s3://my-archive/cam/%Y/%H.mkv"), "-o").is_ok());
    }
}
