//! The two HTTP listeners and their operations: GetDataEndpoint on the control plane, GetMedia on
//! the data plane. Every request is logged, signature-checked, then dispatched.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::config::{Config, Stream, is_stream_name};
use crate::error::ApiError;
use crate::faults::{CallBook, CallFault, Refusal};
use crate::requests::{Log, Plane, Request};
use crate::selector::{Selector, View};
use crate::session::Session;
use crate::sigv4::{AuthError, Authorization};
use crate::timeline::Timeline;

/// State shared by both listeners and every body being streamed.
#[derive(Debug)]
pub struct Shared {
    access_key: String,
    secret_key: String,
    verify_signatures: bool,
    namespaced_error_types: bool,
    pub streams: Vec<StreamState>,
    pub log: Log,
    /// The emulator's start: the origin of live clocks and of logged times.
    pub started: Instant,
    data_endpoint: String,
    request_ids: AtomicU64,
}

/// A stream and what happened to it so far.
#[derive(Debug)]
pub struct StreamState {
    pub spec: Stream,
    pub timeline: Timeline,
    calls: Mutex<CallBook>,
}

impl StreamState {
    /// The stream's call book (a poisoned lock is still usable: it only holds counters).
    pub fn calls(&self) -> MutexGuard<'_, CallBook> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Shared {
    pub fn new(config: Config, log: Log, data_endpoint: String, started: Instant) -> Self {
        let streams = config
            .streams
            .into_iter()
            .map(|spec| StreamState {
                timeline: Timeline::new(&spec),
                spec,
                calls: Mutex::default(),
            })
            .collect();
        Shared {
            access_key: config.access_key,
            secret_key: config.secret_key,
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

    /// The stream a request names with exactly one of StreamName and StreamARN.
    fn find_stream(&self, body: &Value) -> Result<usize, ApiError> {
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

async fn handle(
    State(listener): State<Listener>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Listener { shared, plane } = listener;
    let request_id = shared.request_id();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let auth = Authorization::parse(&headers);
    let entry = shared.log.push(Request {
        operation: operation_name(uri.path()),
        plane,
        body: json.clone(),
        stream: None,
        call_index: None,
        status: 0,
        error_type: None,
        access_key: auth.as_ref().ok().map(|a| a.access_key.clone()),
        region: auth.as_ref().ok().map(|a| a.region.clone()),
        at: Instant::now() - shared.started,
        bytes_sent: 0,
        fragments_sent: 0,
        body_end: None,
    });

    let answer = check_signature(&shared, auth, &method, &uri, &headers, &body)
        .and_then(|()| route(&shared, plane, &method, uri.path(), &json, entry));

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
            error.response(&request_id, shared.namespaced_error_types)
        }
    }
}

/// Recomputes the request's SigV4 signature, unless the emulator was told not to.
fn check_signature(
    shared: &Shared,
    auth: Result<Authorization, AuthError>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    if !shared.verify_signatures {
        return Ok(());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let url = format!("http://{host}{uri}");
    let keys = (shared.access_key.as_str(), shared.secret_key.as_str());
    auth?.verify(keys, method.as_str(), &url, headers, body)?;
    Ok(())
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
        (Plane::Data, &Method::POST, "/getMedia") => get_media(shared, body, entry),
        (_, &Method::POST, "/getDataEndpoint" | "/getMedia") => Err(ApiError::wrong_plane()),
        _ => Err(ApiError::unknown_operation()),
    }
}

/// `GetDataEndpoint` for `/getDataEndpoint`, and so on; other paths as they are.
fn operation_name(path: &str) -> String {
    match path {
        "/getDataEndpoint" => "GetDataEndpoint".into(),
        "/getMedia" => "GetMedia".into(),
        other => other.into(),
    }
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
    if !body.is_object() {
        return Err(ApiError::invalid_argument(
            "The request body must be a JSON object.",
        ));
    }
    let selector = Selector::parse(body).map_err(ApiError::invalid_argument)?;
    let index = shared.find_stream(body)?;
    let stream = &shared.streams[index];
    let name = stream.spec.name.as_str();
    let now = Instant::now();
    let (call, admitted) = stream.calls().admit(now, stream.spec.enforce_limits);
    shared.log.update(entry, |r| {
        r.stream = Some(name.to_owned());
        r.call_index = Some(call);
    });
    admitted.map_err(|refusal| match refusal {
        Refusal::Rate => ApiError::client_limit(name),
        Refusal::Connections => ApiError::connection_limit(name),
    })?;
    let fault = stream
        .spec
        .faults
        .get(call)
        .cloned()
        .unwrap_or(CallFault::None);
    match fault {
        CallFault::Status500 => return Err(ApiError::internal()),
        CallFault::Throttle => return Err(ApiError::client_limit(name)),
        CallFault::ConnectionLimit => return Err(ApiError::connection_limit(name)),
        CallFault::InvalidEndpoint => return Err(ApiError::invalid_endpoint()),
        CallFault::NotAuthorized => return Err(ApiError::not_authorized()),
        _ => {}
    }

    let elapsed = now - shared.started;
    let fragments = &stream.spec.fragments;
    let start = selector.resolve(View {
        fragments,
        oldest: stream
            .timeline
            .oldest(fragments, elapsed, stream.spec.retention_ms),
        arrived: stream.timeline.arrived(elapsed),
    });
    let session = Session::new(Arc::clone(shared), index, entry, start, fault, now);
    let mut response = Body::from_stream(session.into_stream()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("video/webm"));
    Ok(response)
}

fn json_response(body: String) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
