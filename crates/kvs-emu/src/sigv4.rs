//! Server-side SigV4: the signature is recomputed with `aws-sigv4` over the headers the client
//! says it signed and compared with the one it sent, so a client that signs wrongly (wrong
//! secret, wrong service, a body changed after signing, a missing or stale session token) fails
//! here as it would against AWS.

use std::time::SystemTime;

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use axum::http::HeaderMap;

use crate::credentials::SigningKey;

/// The signing name of every Kinesis Video Streams API.
pub const SERVICE: &str = "kinesisvideo";

/// The header that carries the session token of temporary credentials.
const SECURITY_TOKEN: &str = "x-amz-security-token";

/// A parsed `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key: String,
    pub region: String,
    pub service: String,
    signed_headers: Vec<String>,
    signature: String,
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No Authorization header.
    Missing,
    /// An Authorization header that is not a SigV4 one, or no usable `x-amz-date`.
    Malformed(String),
    UnknownKey,
    /// Signed for another service than the one that received the request.
    WrongService {
        expected: &'static str,
    },
    Mismatch,
    /// Temporary credentials without their session token, with another one, or a session
    /// token sent with the long-term key.
    InvalidToken,
    /// Temporary credentials past their expiry.
    ExpiredToken,
}

impl Authorization {
    pub fn parse(headers: &HeaderMap) -> Result<Authorization, AuthError> {
        let Some(value) = headers.get("authorization") else {
            return Err(AuthError::Missing);
        };
        let malformed = |why: &str| AuthError::Malformed(why.to_owned());
        let value = value
            .to_str()
            .map_err(|_| malformed("Authorization header is not ASCII"))?;
        let rest = value.strip_prefix("AWS4-HMAC-SHA256 ").ok_or_else(|| {
            malformed("Authorization header requires the AWS4-HMAC-SHA256 scheme")
        })?;
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',').map(str::trim) {
            if let Some(v) = part.strip_prefix("Credential=") {
                credential = Some(v);
            } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
                signed = Some(v);
            } else if let Some(v) = part.strip_prefix("Signature=") {
                signature = Some(v);
            }
        }
        let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature)
        else {
            return Err(malformed(
                "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'",
            ));
        };
        // AK/yyyymmdd/region/service/aws4_request
        let scope: Vec<&str> = credential.split('/').collect();
        let [access_key, _date, region, service, "aws4_request"] = scope[..] else {
            return Err(malformed(
                "Credential should be access-key/date/region/service/aws4_request",
            ));
        };
        Ok(Authorization {
            access_key: access_key.to_owned(),
            region: region.to_owned(),
            service: service.to_owned(),
            signed_headers: signed.split(';').map(str::to_owned).collect(),
            signature: signature.to_owned(),
        })
    }

    /// Recomputes the signature with `key` (the one the credential scope names) for `service`.
    /// `url` is the request's full URL as the client addressed it. Temporary credentials must
    /// come with their session token in `x-amz-security-token`, signed, as the SDKs send it.
    pub fn verify(
        &self,
        key: &SigningKey,
        service: &'static str,
        method: &str,
        url: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), AuthError> {
        if self.access_key != key.access_key {
            return Err(AuthError::UnknownKey);
        }
        if self.service != service {
            return Err(AuthError::WrongService { expected: service });
        }
        let sent_token = headers.get(SECURITY_TOKEN).map(|v| v.as_bytes());
        match (&key.session_token, sent_token) {
            (None, None) => {}
            (Some(token), Some(sent)) if token.as_bytes() == sent => {
                if !self.signed_headers.iter().any(|h| h == SECURITY_TOKEN) {
                    return Err(AuthError::Mismatch);
                }
            }
            _ => return Err(AuthError::InvalidToken),
        }
        let time = headers
            .get("x-amz-date")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_amz_date)
            .ok_or_else(|| AuthError::Malformed("missing or invalid x-amz-date".into()))?;
        // The signer adds x-amz-date itself, from `time`, and the session token from the key.
        let mut signed = Vec::new();
        for name in self
            .signed_headers
            .iter()
            .filter(|n| !matches!(n.as_str(), "x-amz-date" | SECURITY_TOKEN))
        {
            let values = headers.get_all(name.as_str());
            if values.iter().next().is_none() {
                return Err(AuthError::Mismatch);
            }
            for value in values {
                signed.push((
                    name.as_str(),
                    value.to_str().map_err(|_| AuthError::Mismatch)?,
                ));
            }
        }
        let identity = aws_credential_types::Credentials::new(
            &key.access_key,
            &key.secret_key,
            key.session_token.clone(),
            None,
            "kvs-emu",
        )
        .into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(service)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|_| AuthError::Mismatch)?
            .into();
        let request =
            SignableRequest::new(method, url, signed.into_iter(), SignableBody::Bytes(body))
                .map_err(|_| AuthError::Mismatch)?;
        let expected = sign(request, &params).map_err(|_| AuthError::Mismatch)?;
        if expected.signature() == self.signature {
            Ok(())
        } else {
            Err(AuthError::Mismatch)
        }
    }
}

/// `20240131T235959Z` as a time.
fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let utc = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", text)
        .ok()?
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .ok()?;
    SystemTime::try_from(utc.timestamp()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};

    const KEYS: (&str, &str) = ("AKIDTEST", "secret");
    const URL: &str = "http://127.0.0.1:4566/getMedia";
    const BODY: &[u8] = br#"{"StartSelector":{"StartSelectorType":"NOW"},"StreamName":"cam1"}"#;

    fn key(keys: (&str, &str), token: Option<&str>) -> SigningKey {
        SigningKey {
            access_key: keys.0.into(),
            secret_key: keys.1.into(),
            session_token: token.map(str::to_owned),
        }
    }

    /// Headers of a request signed like an AWS client would.
    fn signed(keys: (&str, &str), service: &str, body: &[u8]) -> HeaderMap {
        signed_with(&key(keys, None), service, body)
    }

    fn signed_with(key: &SigningKey, service: &str, body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("127.0.0.1:4566"));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let identity = aws_credential_types::Credentials::new(
            &key.access_key,
            &key.secret_key,
            key.session_token.clone(),
            None,
            "test",
        )
        .into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("eu-west-1")
            .name(service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let pairs: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        let request = SignableRequest::new(
            "POST",
            URL,
            pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _) = sign(request, &params).unwrap().into_parts();
        for (name, value) in instructions.headers() {
            headers.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn check_with(
        key: &SigningKey,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Authorization, AuthError> {
        let auth = Authorization::parse(headers)?;
        auth.verify(key, SERVICE, "POST", URL, headers, body)?;
        Ok(auth)
    }

    fn check(headers: &HeaderMap, body: &[u8]) -> Result<Authorization, AuthError> {
        check_with(&key(KEYS, None), headers, body)
    }

    #[test]
    fn a_correct_signature_is_accepted_and_its_scope_read() {
        let auth = check(&signed(KEYS, SERVICE, BODY), BODY).unwrap();
        assert_eq!(auth.access_key, "AKIDTEST");
        assert_eq!(auth.region, "eu-west-1");
    }

    #[test]
    fn wrong_signatures_are_refused() {
        let headers = signed(KEYS, SERVICE, BODY);
        assert_eq!(check(&headers, b"{}").unwrap_err(), AuthError::Mismatch);
        let other_secret = signed(("AKIDTEST", "guess"), SERVICE, BODY);
        assert_eq!(check(&other_secret, BODY).unwrap_err(), AuthError::Mismatch);
        let other_key = signed(("AKIDOTHER", "secret"), SERVICE, BODY);
        assert_eq!(check(&other_key, BODY).unwrap_err(), AuthError::UnknownKey);
        let other_service = signed(KEYS, "kinesis", BODY);
        assert_eq!(
            check(&other_service, BODY).unwrap_err(),
            AuthError::WrongService { expected: SERVICE }
        );

        let mut tampered = headers.clone();
        tampered.insert("host", HeaderValue::from_static("127.0.0.1:1"));
        assert_eq!(check(&tampered, BODY).unwrap_err(), AuthError::Mismatch);
        let mut no_date = headers;
        no_date.remove("x-amz-date");
        assert!(matches!(
            check(&no_date, BODY),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn temporary_keys_need_their_session_token_signed() {
        let temporary = key(("ASIATEST", "temporary"), Some("token-1"));
        let headers = signed_with(&temporary, SERVICE, BODY);
        assert_eq!(headers[SECURITY_TOKEN], "token-1");
        check_with(&temporary, &headers, BODY).unwrap();

        let other_token = key(("ASIATEST", "temporary"), Some("token-2"));
        assert_eq!(
            check_with(&other_token, &headers, BODY).unwrap_err(),
            AuthError::InvalidToken
        );
        let no_token = signed_with(&key(("ASIATEST", "temporary"), None), SERVICE, BODY);
        assert_eq!(
            check_with(&temporary, &no_token, BODY).unwrap_err(),
            AuthError::InvalidToken
        );
        // A token sent, but left out of the signature.
        let mut unsigned_token = no_token;
        unsigned_token.insert(SECURITY_TOKEN, HeaderValue::from_static("token-1"));
        assert_eq!(
            check_with(&temporary, &unsigned_token, BODY).unwrap_err(),
            AuthError::Mismatch
        );
        // The long-term key has no session token to send.
        let with_token = signed_with(&key(KEYS, Some("token-1")), SERVICE, BODY);
        assert_eq!(
            check(&with_token, BODY).unwrap_err(),
            AuthError::InvalidToken
        );
    }

    #[test]
    fn malformed_headers_are_told_apart_from_missing_ones() {
        assert_eq!(
            check(&HeaderMap::new(), BODY).unwrap_err(),
            AuthError::Missing
        );
        let mut basic = HeaderMap::new();
        basic.insert("authorization", HeaderValue::from_static("Basic dXNlcg=="));
        assert!(matches!(check(&basic, BODY), Err(AuthError::Malformed(_))));
        let mut short = HeaderMap::new();
        short.insert(
            "authorization",
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=AK/x, SignedHeaders=host, Signature=00",
            ),
        );
        assert!(matches!(check(&short, BODY), Err(AuthError::Malformed(_))));
    }
}
