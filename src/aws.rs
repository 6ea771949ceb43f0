//! Kinesis Video Streams through the AWS SDK: credentials, the data endpoints, GetMedia, and the
//! archived-media API (ListFragments, GetMediaForFragmentList). This is the only module that
//! knows the SDK; the download loop sees a [`MediaSource`], an [`Archive`] and [`Failure`]s it
//! can branch on.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use aws_sdk_kinesisvideo::config::http::HttpResponse;
use aws_sdk_kinesisvideo::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesisvideo::types::ApiName;
use aws_sdk_kinesisvideomedia::config::StalledStreamProtectionConfig;
use aws_sdk_kinesisvideomedia::config::retry::RetryConfig;
use aws_sdk_kinesisvideomedia::primitives::{ByteStream, DateTime};
use aws_sdk_kinesisvideomedia::types::{StartSelector, StartSelectorType};
use bytes::Bytes;

use crate::config::{Clock, Config, StreamId};
use crate::error::Error;
use crate::listing::Listed;

/// Where a GetMedia call starts, in the service's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Now,
    Earliest,
    Time(Clock, jiff::Timestamp),
    /// FRAGMENT_NUMBER: starts at this fragment.
    Fragment(String),
    /// CONTINUATION_TOKEN: continues after the fragment the token came with.
    Token(String),
}

impl Selector {
    /// A short description for logs and progress events.
    pub fn describe(&self) -> String {
        match self {
            Selector::Now => "NOW".into(),
            Selector::Earliest => "EARLIEST".into(),
            Selector::Time(Clock::Server, t) => format!("SERVER_TIMESTAMP {t}"),
            Selector::Time(Clock::Producer, t) => format!("PRODUCER_TIMESTAMP {t}"),
            Selector::Fragment(n) => format!("FRAGMENT_NUMBER {n}"),
            Selector::Token(t) => format!("CONTINUATION_TOKEN {t}"),
        }
    }
}

/// A failed call or body read, as the download loop needs to see it.
#[derive(Debug)]
pub enum Failure {
    /// Worth another try after a pause: network trouble, 5xx, throttling, a stale endpoint.
    Retry {
        reason: String,
        /// The data endpoint is no longer valid: resolve it again before the next call.
        refresh_endpoint: bool,
    },
    /// The streaming token behind the data endpoint expired (NotAuthorized, "expired"): worth
    /// one more try with a freshly resolved endpoint; the error ends the run if it comes again.
    Expired(Error),
    /// Ends the run.
    Fatal(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Fatal(e)
    }
}

/// The GetMedia side of the service. The real one is [`Kvs`]; tests use memory.
#[allow(async_fn_in_trait)] // Driven on one task; no Send bound is needed.
pub trait MediaSource {
    type Body: MediaBody;
    /// Starts a GetMedia call; returns once the response headers have arrived.
    async fn get_media(&mut self, selector: &Selector) -> Result<Self::Body, Failure>;
    /// Resolves the data endpoint again.
    async fn refresh_endpoint(&mut self) -> Result<(), Failure>;
    /// The data endpoint in use, for the start event.
    fn data_endpoint(&self) -> &str;
    /// The region the stream is in, for messages.
    fn region(&self) -> &str;
}

/// A GetMedia response body, read piece by piece as it arrives.
#[allow(async_fn_in_trait)]
pub trait MediaBody {
    /// The next bytes; `Ok(None)` when the service ended the body cleanly.
    async fn next(&mut self) -> Result<Option<Bytes>, Failure>;
}

impl MediaBody for ByteStream {
    async fn next(&mut self) -> Result<Option<Bytes>, Failure> {
        match ByteStream::next(self).await {
            None => Ok(None),
            Some(Ok(bytes)) => Ok(Some(bytes)),
            Some(Err(e)) => Err(Failure::Retry {
                reason: format!("connection dropped: {}", chain(&e)),
                refresh_endpoint: false,
            }),
        }
    }
}

/// The real service, through the AWS SDK.
pub struct Kvs {
    control: aws_sdk_kinesisvideo::Client,
    /// Built once the data endpoint is known, and again only when it changes: every client the
    /// SDK builds loads and parses the system's root certificates.
    media: Option<aws_sdk_kinesisvideomedia::Client>,
    sdk: SdkConfig,
    stream: StreamId,
    region: String,
    data_endpoint: String,
    resolved_at: std::time::Instant,
    /// The LIST_FRAGMENTS and GET_MEDIA_FOR_FRAGMENT_LIST endpoints, resolved once each.
    list_endpoint: Option<String>,
    archive_endpoint: Option<String>,
}

/// The service's streaming token lasts about 45 minutes; resolve the endpoint again before.
const ENDPOINT_LIFETIME: Duration = Duration::from_secs(40 * 60);

impl Kvs {
    /// Resolves region and credentials (profile, assumed role). Credentials are fetched here, so
    /// a missing or refused identity is reported before anything is written; the GET_MEDIA data
    /// endpoint is resolved at the first call.
    pub async fn connect(cfg: &Config) -> Result<Kvs, Error> {
        Ok(Kvs::with_sdk(cfg, sdk_config(cfg).await?))
    }

    /// The service through `sdk` from [`sdk_config`], shared with S3.
    pub fn with_sdk(cfg: &Config, sdk: SdkConfig) -> Kvs {
        let region = sdk.region().map(ToString::to_string).unwrap_or_default();
        let control = aws_sdk_kinesisvideo::Client::new(&sdk);
        Kvs {
            control,
            media: None,
            sdk,
            stream: cfg.stream.clone(),
            region,
            data_endpoint: String::new(),
            resolved_at: std::time::Instant::now(),
            list_endpoint: None,
            archive_endpoint: None,
        }
    }
}

/// The SDK configuration of a run: region, profile, assumed role and one cache of credentials,
/// shared by Kinesis Video and S3. Credentials are fetched here, so a missing or refused identity
/// is reported before anything is written.
pub async fn sdk_config(cfg: &Config) -> Result<SdkConfig, Error> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &cfg.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &cfg.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &cfg.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let mut sdk = loader.load().await;
    sdk.region().ok_or_else(|| {
        Error::usage(
            "no AWS region is set",
            Some("give --region, a --stream-arn, AWS_REGION, or a profile with a region".into()),
        )
    })?;

    if let Some(role) = &cfg.assume_role {
        let provider = aws_config::sts::AssumeRoleProvider::builder(&role.role_arn)
            .session_name(&role.session_name)
            .configure(&sdk)
            .build()
            .await;
        sdk = sdk
            .into_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build();
    }
    let provider = SharedCredentialsProvider::new(Remembered {
        inner: sdk
            .credentials_provider()
            .ok_or_else(no_credentials_error)?,
        last: std::sync::Mutex::new(None),
    });
    sdk = sdk
        .into_builder()
        .credentials_provider(provider.clone())
        .build();
    provider
        .provide_credentials()
        .await
        .map_err(|e| Error::Auth {
            message: match &cfg.assume_role {
                Some(role) => format!("could not assume role {}: {}", role.role_arn, chain(&e)),
                None => format!("no usable AWS credentials: {}", chain(&e)),
            },
            hint: Some(CREDENTIALS_HINT.into()),
        })?;
    Ok(sdk)
}

impl Kvs {
    /// GetDataEndpoint for one API (each may have its own host).
    async fn endpoint_for(&self, api: ApiName) -> Result<String, Failure> {
        let request = self.control.get_data_endpoint().api_name(api.clone());
        let request = match &self.stream {
            StreamId::Name(name) => request.stream_name(name),
            StreamId::Arn(arn) => request.stream_arn(arn),
        };
        let output = request
            .send()
            .await
            .map_err(|e| self.failure("GetDataEndpoint", e))?;
        let endpoint = output.data_endpoint().ok_or_else(|| Failure::Retry {
            reason: "GetDataEndpoint returned no endpoint".into(),
            refresh_endpoint: true,
        })?;
        tracing::debug!(endpoint, api = api.as_str(), "data endpoint resolved");
        Ok(endpoint.to_owned())
    }

    /// Lists every fragment whose start lies in `[start_ms, end_ms]` on `clock`: all pages,
    /// at most 4 calls a second (the service allows 5 per stream, shared with other
    /// consumers), sorted into stream order and de-duplicated.
    pub async fn list_fragments(
        &mut self,
        clock: Clock,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Listed>, Failure> {
        use aws_sdk_kinesisvideoarchivedmedia::types::{
            FragmentSelector, FragmentSelectorType, TimestampRange,
        };
        if self.list_endpoint.is_none() {
            self.list_endpoint = Some(self.endpoint_for(ApiName::ListFragments).await?);
        }
        let client = archived_client(&self.sdk, self.list_endpoint.as_deref().expect("set"));
        let range = TimestampRange::builder()
            .start_timestamp(DateTime::from_millis(start_ms.max(0)))
            .end_timestamp(DateTime::from_millis(end_ms.max(0)))
            .build()
            .map_err(|e| Failure::Fatal(Error::Other(e.into())))?;
        let selector = FragmentSelector::builder()
            .fragment_selector_type(match clock {
                Clock::Server => FragmentSelectorType::ServerTimestamp,
                Clock::Producer => FragmentSelectorType::ProducerTimestamp,
            })
            .timestamp_range(range)
            .build()
            .map_err(|e| Failure::Fatal(Error::Other(e.into())))?;
        let mut listed = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0u32;
        loop {
            if pages > 0 {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            pages += 1;
            let request = client
                .list_fragments()
                .fragment_selector(selector.clone())
                .max_results(1000)
                .set_next_token(token.clone());
            let request = match &self.stream {
                StreamId::Name(name) => request.stream_name(name),
                StreamId::Arn(arn) => request.stream_arn(arn),
            };
            let output = request
                .send()
                .await
                .map_err(|e| self.failure("ListFragments", e))?;
            // A missing Fragments key is an empty page.
            for f in output.fragments() {
                let Some(number) = f.fragment_number() else {
                    continue;
                };
                listed.push(Listed {
                    number: number.to_owned(),
                    bytes: f.fragment_size_in_bytes().max(0) as u64,
                    server_timestamp_ms: f.server_timestamp().map_or(0, round_millis),
                    producer_timestamp_ms: f.producer_timestamp().map_or(0, round_millis),
                    duration_ms: f.fragment_length_in_milliseconds().max(0) as u64,
                });
            }
            match output.next_token() {
                Some(next) if !next.is_empty() && token.as_deref() != Some(next) => {
                    token = Some(next.to_owned())
                }
                _ => break,
            }
        }
        tracing::debug!(pages, fragments = listed.len(), "listed");
        Ok(crate::listing::sort(listed))
    }

    /// Resolves the LIST_FRAGMENTS endpoint again at the next listing (it was refused).
    pub fn forget_list_endpoint(&mut self) {
        self.list_endpoint = None;
    }

    /// A GetMediaForFragmentList client for parallel fetches, on its own resolved endpoint.
    pub async fn archive(&mut self) -> Result<Archive, Failure> {
        if self.archive_endpoint.is_none() {
            self.archive_endpoint =
                Some(self.endpoint_for(ApiName::GetMediaForFragmentList).await?);
        }
        let endpoint = self.archive_endpoint.clone().expect("set");
        Ok(Archive {
            client: archived_client(&self.sdk, &endpoint),
            stream: self.stream.clone(),
            region: self.region.clone(),
            endpoint,
        })
    }

    async fn resolve_endpoint(&mut self) -> Result<(), Failure> {
        let endpoint = self.endpoint_for(ApiName::GetMedia).await?;
        if self.media.is_none() || endpoint != self.data_endpoint {
            self.media = Some(media_client(&self.sdk, &endpoint));
        }
        self.data_endpoint = endpoint;
        self.resolved_at = std::time::Instant::now();
        Ok(())
    }

    /// Sorts an SDK error into what the loop does next.
    fn failure<E>(&self, operation: &str, err: SdkError<E, HttpResponse>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        failure(&self.stream, &self.region, operation, err)
    }
}

/// GetMediaForFragmentList on one stream: cheap to clone, one clone per connection.
#[derive(Clone)]
pub struct Archive {
    client: aws_sdk_kinesisvideoarchivedmedia::Client,
    stream: StreamId,
    region: String,
    endpoint: String,
}

/// Why a GetMediaForFragmentList call did not start.
#[derive(Debug)]
pub enum FetchFailure {
    /// ConnectionLimitExceeded: another consumer holds connections; use fewer.
    Connections(String),
    Other(Failure),
}

impl Archive {
    /// Starts a GetMediaForFragmentList call for `numbers`; returns once the headers arrived.
    pub async fn fetch(&self, numbers: &[String]) -> Result<ByteStream, FetchFailure> {
        let request = self
            .client
            .get_media_for_fragment_list()
            .set_fragments(Some(numbers.to_vec()));
        let request = match &self.stream {
            StreamId::Name(name) => request.stream_name(name),
            StreamId::Arn(arn) => request.stream_arn(arn),
        };
        match request.send().await {
            Ok(output) => Ok(output.payload),
            Err(e) if e.code() == Some("ConnectionLimitExceededException") => Err(
                FetchFailure::Connections("GetMediaForFragmentList: connection limit".into()),
            ),
            Err(e) => Err(FetchFailure::Other(failure(
                &self.stream,
                &self.region,
                "GetMediaForFragmentList",
                e,
            ))),
        }
    }

    /// The data endpoint, for the start event.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

/// A listed timestamp in epoch milliseconds, rounded to the nearest one: ListFragments sends
/// Java doubles, which truncate to one millisecond less (kvs-protocol.md §7.3).
fn round_millis(t: &DateTime) -> i64 {
    t.secs() * 1000 + (i64::from(t.subsec_nanos()) + 500_000) / 1_000_000
}

/// The archived-media client, pointed at its data endpoint. Like the GetMedia client: no
/// stalled-stream protection, no SDK retries (the callers retry with their own pacing).
fn archived_client(sdk: &SdkConfig, endpoint: &str) -> aws_sdk_kinesisvideoarchivedmedia::Client {
    let config = aws_sdk_kinesisvideoarchivedmedia::config::Builder::from(sdk)
        .endpoint_url(endpoint)
        .stalled_stream_protection(
            aws_sdk_kinesisvideoarchivedmedia::config::StalledStreamProtectionConfig::disabled(),
        )
        .retry_config(aws_sdk_kinesisvideoarchivedmedia::config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .build(),
        )
        .build();
    aws_sdk_kinesisvideoarchivedmedia::Client::from_conf(config)
}

/// Sorts an SDK error into what the caller does next.
fn failure<E>(
    stream: &StreamId,
    region: &str,
    operation: &str,
    err: SdkError<E, HttpResponse>,
) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    {
        let stream = stream.display();
        let region = &region.to_owned();
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().unwrap_or_default().to_owned();
        let message = err.message().unwrap_or_default().to_owned();
        let fatal = |e| Failure::Fatal(e);
        match (code.as_str(), &err) {
            ("ResourceNotFoundException", _) => fatal(Error::StreamNotFound {
                stream: stream.into(),
                region: region.clone(),
            }),
            ("InvalidArgumentException", _) => fatal(Error::InvalidArgument {
                stream: stream.into(),
                message,
            }),
            ("NotAuthorizedException" | "AccessDeniedException" | "AccessDenied", _) => {
                let expired = message.to_ascii_lowercase().contains("expired");
                let error = Error::Auth {
                    message: format!(
                        "not authorized to call {operation} on stream {stream} in {region}: {message}"
                    ),
                    hint: Some(
                        "use credentials allowed kinesisvideo:GetDataEndpoint and kinesisvideo:GetMedia on this stream"
                            .into(),
                    ),
                };
                if expired {
                    Failure::Expired(error)
                } else {
                    fatal(error)
                }
            }
            (
                "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "SignatureDoesNotMatch"
                | "InvalidClientTokenId"
                | "ExpiredTokenException"
                | "ExpiredToken"
                | "MissingAuthenticationTokenException"
                | "IncompleteSignatureException",
                _,
            ) => fatal(Error::Auth {
                message: format!("AWS refused the credentials ({code}): {message}"),
                hint: Some(CREDENTIALS_HINT.into()),
            }),
            ("InvalidEndpointException", _) => Failure::Retry {
                reason: format!("{operation}: the data endpoint is no longer valid"),
                refresh_endpoint: true,
            },
            ("ClientLimitExceededException" | "ConnectionLimitExceededException", _) => {
                Failure::Retry {
                    reason: format!("{operation} throttled ({code})"),
                    refresh_endpoint: false,
                }
            }
            (_, SdkError::ServiceError(_))
                if status.is_some_and(|s| s >= 500) || code.contains("Throttl") =>
            {
                Failure::Retry {
                    reason: format!(
                        "{operation} failed with HTTP {}{}",
                        status.unwrap_or_default(),
                        if code.is_empty() {
                            String::new()
                        } else {
                            format!(" ({code})")
                        }
                    ),
                    refresh_endpoint: false,
                }
            }
            (_, SdkError::ServiceError(_)) => fatal(Error::Other(anyhow::anyhow!(
                "{operation} on stream {stream} in {region} failed: HTTP {} {code} {message}",
                status.unwrap_or_default()
            ))),
            (_, SdkError::ConstructionFailure(_)) => fatal(Error::Other(anyhow::anyhow!(
                "could not build the {operation} request: {}",
                chain(&err)
            ))),
            _ => Failure::Retry {
                reason: format!("{operation}: {}", chain(&err)),
                refresh_endpoint: false,
            },
        }
    }
}

impl MediaSource for Kvs {
    type Body = ByteStream;

    async fn get_media(&mut self, selector: &Selector) -> Result<ByteStream, Failure> {
        // Resolved at the first call (so its failures are retried like any other) and again
        // before the streaming token behind it ages out.
        if self.media.is_none()
            || self.data_endpoint.is_empty()
            || self.resolved_at.elapsed() > ENDPOINT_LIFETIME
        {
            self.resolve_endpoint().await?;
        }
        let media = self.media.as_ref().expect("resolved above");
        let request = media.get_media().start_selector(start_selector(selector));
        let request = match &self.stream {
            StreamId::Name(name) => request.stream_name(name),
            StreamId::Arn(arn) => request.stream_arn(arn),
        };
        tracing::debug!(selector = %selector.describe(), "GetMedia");
        let output = request
            .send()
            .await
            .map_err(|e| self.failure("GetMedia", e))?;
        Ok(output.payload)
    }

    async fn refresh_endpoint(&mut self) -> Result<(), Failure> {
        self.resolve_endpoint().await
    }

    fn data_endpoint(&self) -> &str {
        &self.data_endpoint
    }

    fn region(&self) -> &str {
        &self.region
    }
}

/// Remembers credentials until shortly before they expire, so that checking them up front does
/// not make the SDK fetch them a second time (another AssumeRole, SSO or IMDS call).
#[derive(Debug)]
struct Remembered {
    inner: SharedCredentialsProvider,
    last: std::sync::Mutex<Option<Credentials>>,
}

impl ProvideCredentials for Remembered {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let fresh = |c: &Credentials| {
                c.expiry()
                    .is_none_or(|e| e > SystemTime::now() + Duration::from_secs(300))
            };
            let remembered = self.last.lock().expect("not poisoned").clone();
            if let Some(c) = remembered.filter(fresh) {
                return Ok(c);
            }
            let c = self.inner.provide_credentials().await?;
            *self.last.lock().expect("not poisoned") = Some(c.clone());
            Ok(c)
        })
    }
}

const CREDENTIALS_HINT: &str = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, choose a profile with --profile or AWS_PROFILE, or log in with `aws sso login`";

fn no_credentials_error() -> Error {
    Error::Auth {
        message: "no AWS credentials found".into(),
        hint: Some(CREDENTIALS_HINT.into()),
    }
}

/// The GetMedia client, pointed at the data endpoint. Stalled-stream protection is off: a live
/// stream at its head is silent between fragments, and the SDK would kill it after 5 s (the
/// download loop has its own watchdog).
fn media_client(sdk: &SdkConfig, endpoint: &str) -> aws_sdk_kinesisvideomedia::Client {
    let config = aws_sdk_kinesisvideomedia::config::Builder::from(sdk)
        .endpoint_url(endpoint)
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        // The download loop retries GetMedia itself, with backoff that keeps under the service's
        // 5 calls per second and counts toward --max-retries; SDK retries would hide both.
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .build(),
        )
        .build();
    aws_sdk_kinesisvideomedia::Client::from_conf(config)
}

fn start_selector(selector: &Selector) -> StartSelector {
    let builder = StartSelector::builder();
    let builder = match selector {
        Selector::Now => builder.start_selector_type(StartSelectorType::Now),
        Selector::Earliest => builder.start_selector_type(StartSelectorType::Earliest),
        Selector::Time(clock, t) => builder
            .start_selector_type(match clock {
                Clock::Server => StartSelectorType::ServerTimestamp,
                Clock::Producer => StartSelectorType::ProducerTimestamp,
            })
            .start_timestamp(DateTime::from_millis(t.as_millisecond())),
        Selector::Fragment(n) => builder
            .start_selector_type(StartSelectorType::FragmentNumber)
            .after_fragment_number(n),
        Selector::Token(t) => builder
            .start_selector_type(StartSelectorType::ContinuationToken)
            .continuation_token(t),
    };
    builder.build().expect("start_selector_type is always set")
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// ListStreams, every page: the names of the active streams whose name begins with `prefix`
/// (all of them for `""`), in the service's order, for `--streams-matching`.
pub async fn list_streams(sdk: &SdkConfig, prefix: &str) -> Result<Vec<String>, Error> {
    use aws_sdk_kinesisvideo::types::{ComparisonOperator, Status, StreamNameCondition};
    let client = aws_sdk_kinesisvideo::Client::new(sdk);
    let region = sdk.region().map(ToString::to_string).unwrap_or_default();
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut attempts = 0;
    loop {
        let mut request = client.list_streams().set_next_token(token.clone());
        if !prefix.is_empty() {
            request = request.stream_name_condition(
                StreamNameCondition::builder()
                    .comparison_operator(ComparisonOperator::BeginsWith)
                    .comparison_value(prefix)
                    .build(),
            );
        }
        let page = match request.send().await {
            Ok(page) => page,
            Err(e) => {
                let stream = StreamId::Name(format!("{prefix}*"));
                match failure(&stream, &region, "ListStreams", e) {
                    Failure::Retry { reason, .. } if attempts < 5 => {
                        attempts += 1;
                        tracing::debug!(%reason, attempts, "ListStreams: trying again");
                        tokio::time::sleep(Duration::from_millis(200 << attempts)).await;
                        continue;
                    }
                    Failure::Retry { reason, .. } => {
                        return Err(Error::RetriesExhausted {
                            attempts,
                            last: reason,
                        });
                    }
                    Failure::Fatal(e) | Failure::Expired(e) => return Err(e),
                }
            }
        };
        attempts = 0;
        names.extend(
            page.stream_info_list()
                .iter()
                .filter(|s| s.status() == Some(&Status::Active))
                .filter_map(|s| s.stream_name().map(str::to_owned)),
        );
        token = page
            .next_token()
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        if token.is_none() {
            return Ok(names);
        }
    }
}
