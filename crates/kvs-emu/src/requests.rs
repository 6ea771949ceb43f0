//! The request log: every request the emulator answered, so tests can check what a client asked
//! for, how often, and what it got.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

/// Which listener a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Plane {
    /// The endpoint clients are configured with (GetDataEndpoint, DescribeStream, ListStreams).
    Control,
    /// The endpoint GetDataEndpoint returns (GetMedia, ListFragments, GetMediaForFragmentList).
    Data,
}

/// How a GetMedia or GetMediaForFragmentList body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BodyEnd {
    /// Every chunk a GetMediaForFragmentList call asked for was sent: a clean end.
    Complete,
    /// No new fragment within the stream's `idle_close`: a clean end.
    Idle,
    /// The stream's `max_session` was reached: a clean end.
    MaxSession,
    /// An in-band error chunk was sent, then a clean end.
    InBandError,
    /// A scripted cut dropped the connection.
    Cut,
    /// The client went away first.
    ClientGone,
}

/// One logged request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Request {
    /// `GetDataEndpoint`, `DescribeStream`, `ListStreams`, `GetMedia`, `ListFragments`,
    /// `GetMediaForFragmentList`, the `Action` of an STS request (`AssumeRole`), or the path of
    /// anything else.
    pub operation: String,
    pub plane: Plane,
    /// The JSON body (`Null` when it was not JSON); for an STS request, its form fields as an
    /// object of strings.
    pub body: serde_json::Value,
    /// The stream the request resolved to, by name or ARN.
    pub stream: Option<String>,
    /// For GetMedia, ListFragments and GetMediaForFragmentList: the call's number among that
    /// API's calls on its stream (for GetMedia, which [`crate::CallFault`] applied).
    pub call_index: Option<usize>,
    pub status: u16,
    /// `x-amzn-ErrorType` of an error answer.
    pub error_type: Option<String>,
    /// From the SigV4 credential scope, whether or not the signature was valid.
    pub access_key: Option<String>,
    /// The role whose temporary credentials (from AssumeRole) that access key is; `None` for the
    /// long-term key or an unknown one.
    pub assumed_role: Option<String>,
    pub region: Option<String>,
    /// When the request arrived, since the emulator started (monotonic).
    pub at: Duration,
    /// Body bytes sent so far (GetMedia and GetMediaForFragmentList bodies update this while
    /// they stream).
    pub bytes_sent: u64,
    /// Complete fragments sent so far (in-band error chunks not counted).
    pub fragments_sent: usize,
    /// How the media body ended; `None` while it streams, or when there was no body.
    pub body_end: Option<BodyEnd>,
}

/// The shared, append-only log.
#[derive(Debug, Clone, Default)]
pub(crate) struct Log(Arc<Mutex<Vec<Request>>>);

impl Log {
    /// Appends a request; returns its index for later updates.
    pub fn push(&self, request: Request) -> usize {
        let mut log = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        log.push(request);
        log.len() - 1
    }

    pub fn update(&self, index: usize, change: impl FnOnce(&mut Request)) {
        let mut log = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(request) = log.get_mut(index) {
            change(request);
        }
    }

    pub fn snapshot(&self) -> Vec<Request> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
