//! The two HTTP listeners and their operations: GetDataEndpoint, DescribeStream, ListStreams and
//! STS AssumeRole on the control plane; GetMedia, ListFragments and GetMediaForFragmentList on the
//! data plane. Every request is logged, signature-checked, then dispatched.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::archive;
use crate::config::{Config, Stream, is_stream_name};
use crate::credentials::{Identity, Keyring};
use crate::error::ApiError;
use crate::faults::{Api, CallBook, CallFault, Refusal};
use crate::query;
use crate::requests::{Log, Plane, Request};
use crate::selector::{Selector, View};
use crate::session::Session;
use crate::sigv4::{self, AuthError, Authorization};
use crate::stream_info;
use crate::sts::{self, Sts};
use crate::timeline::Timeline;

/// State shared by both listeners and every body being streamed.
#[derive(Debug)]
pub struct Shared {
    keys: Keyring,
    /// Roles AssumeRole may hand out credentials for; empty: any.
    roles: Vec<String>,
    verify_signatures: bool,
    namespaced_error_types: bool,
    pub streams: Vec<StreamState>,
    pub log: Log,
    /// The emulator's start: the origin of live clocks and of logged times.
    pub started: Instant,
    pub data_endpoint: String,
    request_ids: AtomicU64,
}

/// A stream and what happened to it so far.
#[derive(Debug)]
pub struct StreamState {
    pub spec: Stream,
    pub timeline: Timeline,
    /// One call book per limited API, in [`Api::ALL`] order.
    books: [Mutex<CallBook>; 3],
    /// Fragment index by number (without leading zeros): GetMediaForFragmentList looks up to
    /// 1000 numbers per call.
    by_number: HashMap<String, usize>,
    /// How many times GetMediaForFragmentList asked for each fragment index, for
    /// [`crate::FragmentFault::NotFoundFirst`].
    asked: Mutex<HashMap<usize, usize>>,
}

impl StreamState {
    fn new(spec: Stream) -> Self {
        let by_number = spec
            .fragments
            .iter()
            .enumerate()
            .map(|(i, f)| (canonical_number(f.number()).to_owned(), i))
            .collect();
        StreamState {
            timeline: Timeline::new(&spec),
            spec,
            books: Default::default(),
            by_number,
            asked: Mutex::default(),
        }
    }

    /// The stream's call book for `api` (a poisoned lock is still usable: it only holds
    /// counters).
    pub fn calls(&self, api: Api) -> MutexGuard<'_, CallBook> {
        let index = Api::ALL.iter().position(|&a| a == api).unwrap_or(0);
        self.books[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The index of the fragment with this number, however many leading zeros it carries.
    pub fn fragment_index(&self, number: &str) -> Option<usize> {
        self.by_number.get(canonical_number(number)).copied()
    }

    /// Counts a request for fragment `index`; returns how many came before it.
    pub fn ask(&self, index: usize) -> usize {
        let mut asked = self.asked.lock().unwrap_or_else(PoisonError::into_inner);
        let count = asked.entry(index).or_insert(0);
        *count += 1;
        *count - 1
    }
}

/// A fragment number without its leading zeros (numbers compare as integers).
fn canonical_number(number: &str) -> &str {
    let trimmed = number.trim_start_matches('0');
    if trimmed.is_empty() && !number.is_empty() {
        "0"
    } else {
        trimmed
    }
}

impl Shared {
    pub fn new(config: Config, log: Log, data_endpoint: String, started: Instant) -> Self {
        let streams = config.streams.into_iter().map(StreamState::new).collect();
        Shared {
            keys: Keyring::new(config.access_key, config.secret_key),
            roles: config.roles,
            verify_signatures: config.verify_signatures,
            namespaced_error_types: config.namespaced_error_types,
            streams,
            log,
            started,
            data_endpoint,
            request_ids: AtomicU64::new(1),
        }
    }

    fn request_id(&self) -> String {
        let n = self.request_ids.fetch_add(1, Ordering::Relaxed);
        format!("00000000-0000-4000-8000-{n:012x}")
    }

    /// Numbers a call of `api` on stream `index` (logged with the stream's name) and applies the
    /// stream's limits for that API. An admitted call with a body opens and closes a connection
    /// in [`StreamState::calls`].
    pub fn admit(
        &self,
        index: usize,
        api: Api,
        entry: usize,
        now: Instant,
    ) -> Result<usize, ApiError> {
        let stream = &self.streams[index];
        let name = stream.spec.name.as_str();
        let limits = api.limits(stream.spec.enforce_limits, stream.spec.held_connections);
        let (call, admitted) = stream.calls(api).admit(now, limits);
        self.log.update(entry, |r| {
            r.stream = Some(name.to_owned());
            r.call_index = Some(call);
        });
        admitted.map_err(|refusal| match refusal {
            Refusal::Rate => ApiError::client_limit(api.name(), name),
            Refusal::Connections => ApiError::connection_limit(api.name(), name),
        })?;
        Ok(call)
    }

    /// The stream a request names with exactly one of StreamName and StreamARN.
    pub fn find_stream(&self, body: &Value) -> Result<usize, ApiError> {
        let name = body.get("StreamName").filter(|v| !v.is_null());
        let arn = body.get("StreamARN").filter(|v| !v.is_null());
        let found = match (name, arn) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid_argument(
                    "Specify either StreamName or StreamARN, not both.",
                ));
            }
            (None, None) => {
                return Err(ApiError::invalid_argument(
                    "Either StreamName or StreamARN must be specified.",
                ));
            }
            (Some(name), None) => {
                let name = name.as_str().filter(|n| is_stream_name(n)).ok_or_else(|| {
                    ApiError::invalid_argument(format!(
                        "1 validation error detected: Value {name} at 'streamName' failed to \
                             satisfy constraint: Member must satisfy regular expression pattern: \
                             [a-zA-Z0-9_.-]+"
                    ))
                })?;
                self.streams.iter().position(|s| s.spec.name == name)
            }
            (None, Some(arn)) => {
                let arn = arn
                    .as_str()
                    .filter(|a| a.starts_with("arn:") && a.len() <= 1024)
                    .ok_or_else(|| {
                        ApiError::invalid_argument(format!("StreamARN {arn} is not a valid ARN."))
                    })?;
                self.streams.iter().position(|s| s.spec.arn() == arn)
            }
        };
        found.ok_or_else(ApiError::not_found)
    }
}

/// The router of one listener.
pub fn router(shared: Arc<Shared>, plane: Plane) -> Router {
    Router::new()
        .fallback(handle)
        .with_state(Listener { shared, plane })
}

#[derive(Clone)]
struct Listener {
    shared: Arc<Shared>,
    plane: Plane,
}

/// How a request is encoded, and so how it is authenticated and answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// Kinesis Video Streams: `POST /<operation>` with a JSON body, signed for `kinesisvideo`.
    RestJson,
    /// STS: a form-encoded `POST /` on the control plane, signed for `sts`.
    AwsQuery,
}

impl Protocol {
    fn of(plane: Plane, method: &Method, path: &str) -> Protocol {
        if plane == Plane::Control && method == Method::POST && path == "/" {
            Protocol::AwsQuery
        } else {
            Protocol::RestJson
        }
    }
}

async fn handle(
    State(listener): State<Listener>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Listener { shared, plane } = listener;
    let request_id = shared.request_id();
    let protocol = Protocol::of(plane, &method, uri.path());
    let (operation, fields) = match protocol {
        Protocol::RestJson => (
            operation_name(uri.path()),
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        ),
        Protocol::AwsQuery => {
            let fields = query::form_fields(&body);
            let action = fields.get("Action").and_then(Value::as_str).unwrap_or("/");
            (action.to_owned(), fields)
        }
    };
    let auth = Authorization::parse(&headers);
    let access_key = auth.as_ref().ok().map(|a| a.access_key.clone());
    let entry = shared.log.push(Request {
        operation,
        plane,
        body: fields.clone(),
        stream: None,
        call_index: None,
        status: 0,
        error_type: None,
        assumed_role: access_key.as_deref().and_then(|k| shared.keys.role_of(k)),
        access_key,
        region: auth.as_ref().ok().map(|a| a.region.clone()),
        at: Instant::now() - shared.started,
        bytes_sent: 0,
        fragments_sent: 0,
        body_end: None,
    });

    let answer =
        authenticate(&shared, protocol, auth, &method, &uri, &headers, &body).and_then(|caller| {
            match protocol {
                Protocol::RestJson => route(&shared, plane, &method, uri.path(), &fields, entry),
                Protocol::AwsQuery => Sts {
                    keys: &shared.keys,
                    roles: &shared.roles,
                }
                .answer(&caller, &fields, &request_id, Timestamp::now()),
            }
        });

    match answer {
        Ok(mut response) => {
            if let Ok(id) = HeaderValue::from_str(&request_id) {
                response.headers_mut().insert("x-amzn-requestid", id);
            }
            let status = response.status().as_u16();
            shared.log.update(entry, |r| r.status = status);
            response
        }
        Err(error) => {
            shared.log.update(entry, |r| {
                r.status = error.status.as_u16();
                r.error_type = Some(error.kind.to_owned());
            });
            match protocol {
                Protocol::RestJson => error.response(&request_id, shared.namespaced_error_types),
                Protocol::AwsQuery => query::error_response(&error, &request_id, sts::NAMESPACE),
            }
        }
    }
}

/// Who signed the request: the key its credential scope names, checked by recomputing the
/// SigV4 signature for the protocol's service. Unless the emulator was told not to check, then
/// anyone is the user.
fn authenticate(
    shared: &Shared,
    protocol: Protocol,
    auth: Result<Authorization, AuthError>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Identity, ApiError> {
    if !shared.verify_signatures {
        return Ok(Identity::User);
    }
    let (service, refusal): (_, fn(AuthError) -> ApiError) = match protocol {
        Protocol::RestJson => (sigv4::SERVICE, ApiError::from),
        Protocol::AwsQuery => (sts::SERVICE, sts::auth_error),
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let url = format!("http://{host}{uri}");
    let checked = auth.and_then(|auth| {
        let (key, identity) = shared.keys.find(&auth.access_key, Timestamp::now())?;
        auth.verify(&key, service, method.as_str(), &url, headers, body)?;
        Ok(identity)
    });
    checked.map_err(refusal)
}

/// Runs the operation the listener and path name.
fn route(
    shared: &Arc<Shared>,
    plane: Plane,
    method: &Method,
    path: &str,
    body: &Value,
    entry: usize,
) -> Result<Response, ApiError> {
    match (plane, method, path) {
        (Plane::Control, &Method::POST, "/getDataEndpoint") => {
            get_data_endpoint(shared, body, entry)
        }
        (Plane::Control, &Method::POST, "/describeStream") => {
            stream_info::describe_stream(shared, body, entry)
        }
        (Plane::Control, &Method::POST, "/listStreams") => stream_info::list_streams(shared, body),
        (Plane::Data, &Method::POST, "/getMedia") => get_media(shared, body, entry),
        (Plane::Data, &Method::POST, "/listFragments") => {
            archive::list_fragments(shared, body, entry)
        }
        (Plane::Data, &Method::POST, "/getMediaForFragmentList") => {
            archive::get_media_for_fragment_list(shared, body, entry)
        }
        (_, &Method::POST, path) if OPERATIONS.iter().any(|(p, _)| *p == path) => {
            Err(ApiError::wrong_plane())
        }
        _ => Err(ApiError::unknown_operation()),
    }
}

/// The operations the emulator answers, by path, with the names the log gives them.
const OPERATIONS: [(&str, &str); 6] = [
    ("/getDataEndpoint", "GetDataEndpoint"),
    ("/describeStream", "DescribeStream"),
    ("/listStreams", "ListStreams"),
    ("/getMedia", "GetMedia"),
    ("/listFragments", "ListFragments"),
    ("/getMediaForFragmentList", "GetMediaForFragmentList"),
];

/// `GetDataEndpoint` for `/getDataEndpoint`, and so on; other paths as they are.
fn operation_name(path: &str) -> String {
    OPERATIONS
        .iter()
        .find(|(p, _)| *p == path)
        .map_or(path, |(_, name)| name)
        .to_owned()
}

/// The API names GetDataEndpoint accepts.
const API_NAMES: [&str; 8] = [
    "PUT_MEDIA",
    "GET_MEDIA",
    "LIST_FRAGMENTS",
    "GET_MEDIA_FOR_FRAGMENT_LIST",
    "GET_HLS_STREAMING_SESSION_URL",
    "GET_DASH_STREAMING_SESSION_URL",
    "GET_CLIP",
    "GET_IMAGES",
];

fn get_data_endpoint(shared: &Shared, body: &Value, entry: usize) -> Result<Response, ApiError> {
    match body.get("APIName").filter(|v| !v.is_null()) {
        Some(Value::String(name)) if API_NAMES.contains(&name.as_str()) => {}
        Some(other) => {
            return Err(ApiError::invalid_argument(format!(
                "1 validation error detected: Value {other} at 'aPIName' failed to satisfy \
                 constraint: Member must satisfy enum value set: [{}]",
                API_NAMES.join(", ")
            )));
        }
        None => {
            return Err(ApiError::invalid_argument(
                "1 validation error detected: Value null at 'aPIName' failed to satisfy \
                 constraint: Member must not be null",
            ));
        }
    }
    let stream = shared.find_stream(body)?;
    let name = shared.streams[stream].spec.name.clone();
    shared.log.update(entry, |r| r.stream = Some(name));
    let body = json!({ "DataEndpoint": shared.data_endpoint }).to_string();
    Ok(json_response(body))
}

fn get_media(shared: &Arc<Shared>, body: &Value, entry: usize) -> Result<Response, ApiError> {
    require_object(body)?;
    let selector = Selector::parse(body).map_err(ApiError::invalid_argument)?;
    let index = shared.find_stream(body)?;
    let stream = &shared.streams[index];
    let name = stream.spec.name.as_str();
    let now = Instant::now();
    let call = shared.admit(index, Api::GetMedia, entry, now)?;
    let fault = stream.spec.fault(call);
    let api = Api::GetMedia.name();
    match &fault {
        CallFault::Status500 => return Err(ApiError::internal()),
        CallFault::Throttle => return Err(ApiError::client_limit(api, name)),
        CallFault::ConnectionLimit => return Err(ApiError::connection_limit(api, name)),
        CallFault::InvalidEndpoint => return Err(ApiError::invalid_endpoint()),
        CallFault::NotAuthorized => return Err(ApiError::not_authorized()),
        CallFault::ExpiredToken => return Err(ApiError::expired_token()),
        CallFault::InvalidArgument { message } => {
            return Err(ApiError::invalid_argument(message.clone()));
        }
        _ => {}
    }

    let elapsed = now - shared.started;
    let fragments = &stream.spec.fragments;
    let view = View {
        fragments,
        oldest: stream
            .timeline
            .oldest(fragments, elapsed, stream.spec.retention_ms),
        arrived: stream.timeline.arrived(elapsed),
    };
    if stream.spec.reject_unknown_tokens && selector.is_stale_token(view) {
        return Err(ApiError::invalid_argument("ContinuationToken is not valid"));
    }
    let start = selector.resolve(view);
    let session = Session::new(Arc::clone(shared), index, entry, start, fault, now);
    let mut response = Body::from_stream(session.into_stream()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("video/webm"));
    Ok(response)
}

/// Every operation's body is a JSON object; anything else is refused as the service does.
pub fn require_object(body: &Value) -> Result<(), ApiError> {
    if body.is_object() {
        Ok(())
    } else {
        Err(ApiError::invalid_argument(
            "The request body must be a JSON object.",
        ))
    }
}

/// A request member that is present and not null (the SDKs leave unset members out; some
/// clients send `null`).
pub fn member<'a>(object: &'a Value, name: &str) -> Option<&'a Value> {
    object.get(name).filter(|v| !v.is_null())
}

pub fn json_response(body: String) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
