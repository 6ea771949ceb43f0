//! Error answers in the AWS rest-json shape of the Kinesis Video Streams APIs: status,
//! `x-amzn-ErrorType`, `x-amzn-RequestId` and `{"Message": …}` (kvs-protocol.md §1, §3.3). STS
//! answers the same errors in the awsQuery shape ([`crate::query`]).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::sigv4::AuthError;

/// The namespace AWS sometimes appends to the error type.
const NAMESPACE: &str = "https://kinesisvideo.amazonaws.com/doc/2017-09-30/";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// The exception name, e.g. `ResourceNotFoundException`.
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidArgumentException", message)
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            "The requested stream is not found or not active.",
        )
    }

    /// Too many calls of `api` (e.g. `GetMedia`) per second on a stream.
    pub fn client_limit(api: &str, stream: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "ClientLimitExceededException",
            format!("Limit exceeded on number of requests for {api} API for resource '{stream}'"),
        )
    }

    /// Too many open `api` bodies on a stream.
    pub fn connection_limit(api: &str, stream: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "ConnectionLimitExceededException",
            format!(
                "Limit exceeded on number of connections for {api} API for resource '{stream}'"
            ),
        )
    }

    pub fn not_authorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "NotAuthorizedException",
            "The caller is not authorized to perform this operation, or the token has expired.",
        )
    }

    /// What KVS says when the temporary credentials a streaming call was signed with aged out.
    pub fn expired_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "NotAuthorizedException",
            "The security token included in the request is expired",
        )
    }

    /// The data endpoint is not (or no longer) the right one: ask GetDataEndpoint again.
    pub fn invalid_endpoint() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidEndpointException",
            "Caller used wrong endpoint. Call GetDataEndpoint and use the endpoint it returns.",
        )
    }

    /// An operation sent to the other plane's endpoint. AWS's text for it is documented; its
    /// status and type are not, so this uses the modeled "wrong endpoint" error.
    pub fn wrong_plane() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidEndpointException",
            "Unable to determine service/operation name to be authorized",
        )
    }

    pub fn unknown_operation() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            "The operation is not supported by this endpoint.",
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "The request processing has failed because of an unknown error, exception or failure.",
        )
    }

    /// The answer, with the request's id; `namespaced` appends the service namespace to the type.
    pub fn response(&self, request_id: &str, namespaced: bool) -> Response {
        let kind = if namespaced {
            format!("{}:{NAMESPACE}", self.kind)
        } else {
            self.kind.to_owned()
        };
        let body = serde_json::json!({ "Message": self.message }).to_string();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in [
            ("x-amzn-errortype", kind.as_str()),
            ("x-amzn-requestid", request_id),
        ] {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        }
        response
    }
}

/// AWS's validation message for a required member that is missing, for every API.
pub fn null_member(path: &str) -> String {
    format!(
        "1 validation error detected: Value null at '{path}' failed to satisfy constraint: \
         Member must not be null"
    )
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let forbidden = |kind, message: &str| Self::new(StatusCode::FORBIDDEN, kind, message);
        match e {
            AuthError::Missing => forbidden(
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            ),
            AuthError::Malformed(why) => {
                Self::new(StatusCode::BAD_REQUEST, "IncompleteSignatureException", why)
            }
            AuthError::UnknownKey | AuthError::InvalidToken => forbidden(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ),
            // What KVS answers then, rather than the generic 403 ExpiredTokenException: the
            // same answer as the scripted fault, so one client path handles both.
            AuthError::ExpiredToken => Self::expired_token(),
            AuthError::WrongService { expected } => forbidden(
                "InvalidSignatureException",
                &format!("Credential should be scoped to correct service: '{expected}'. "),
            ),
            AuthError::Mismatch => forbidden(
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided. \
                 Check your AWS Secret Access Key and signing method.",
            ),
        }
    }
}
