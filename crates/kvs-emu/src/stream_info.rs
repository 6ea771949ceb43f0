//! The control plane's stream catalogue: DescribeStream and ListStreams, answered with the
//! `StreamInfo` shape of the model (MODEL-ctrl), CreationTime in the service's Java-double
//! notation like every timestamp it writes.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use axum::response::Response;
use serde_json::Value;

use crate::config::{CREATION_MS, Stream, is_stream_name};
use crate::error::ApiError;
use crate::java_double;
use crate::selector::pattern;
use crate::server::{Shared, json_response, member, require_object};
use crate::token;

/// ListStreams' MaxResults bounds; the model's default is the maximum.
const MAX_RESULTS: i64 = 10_000;
/// The first field of a ListStreams NextToken.
const TOKEN_KIND: &str = "ListStreams/1";
/// DataRetentionInHours of a stream without a retention limit: the service's maximum, ten years.
const KEEP_FOREVER_HOURS: u64 = 87_600;

/// `POST /describeStream`.
pub fn describe_stream(
    shared: &Arc<Shared>,
    body: &Value,
    entry: usize,
) -> Result<Response, ApiError> {
    require_object(body)?;
    let index = shared.find_stream(body)?;
    let spec = &shared.streams[index].spec;
    shared
        .log
        .update(entry, |r| r.stream = Some(spec.name.clone()));
    Ok(json_response(format!(
        "{{\"StreamInfo\":{}}}",
        stream_info(spec)
    )))
}

/// `POST /listStreams`: streams sorted by name, optionally only those whose name begins with a
/// prefix, in pages.
pub fn list_streams(shared: &Arc<Shared>, body: &Value) -> Result<Response, ApiError> {
    require_object(body)?;
    let max_results = match member(body, "MaxResults") {
        None => MAX_RESULTS as usize,
        Some(value) => value
            .as_i64()
            .filter(|n| (1..=MAX_RESULTS).contains(n))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| {
                ApiError::invalid_argument(format!(
                    "1 validation error detected: Value {value} at 'maxResults' failed to \
                     satisfy constraint: Member must have value between 1 and {MAX_RESULTS}"
                ))
            })?,
    };
    let prefix = name_prefix(body)?;
    let offset = match member(body, "NextToken") {
        None => 0,
        Some(Value::String(t)) if t.is_empty() => 0,
        Some(Value::String(t)) => read_token(t, &prefix)
            .ok_or_else(|| ApiError::invalid_argument("NextToken is not valid."))?,
        Some(other) => {
            return Err(ApiError::invalid_argument(pattern(
                "nextToken",
                other,
                "[a-zA-Z0-9+/=]*",
            )));
        }
    };
    let mut streams: Vec<&Stream> = shared
        .streams
        .iter()
        .map(|s| &s.spec)
        .filter(|s| s.name.starts_with(&prefix))
        .collect();
    streams.sort_by(|a, b| a.name.cmp(&b.name));
    let end = offset.saturating_add(max_results).min(streams.len());
    let page: Vec<String> = streams
        .get(offset..end)
        .unwrap_or_default()
        .iter()
        .map(|s| stream_info(s))
        .collect();
    let mut json = format!("{{\"StreamInfoList\":[{}]", page.join(","));
    if end < streams.len() {
        let next = token::encode(&[TOKEN_KIND.to_owned(), prefix, end.to_string()]);
        json.push_str(&format!(",\"NextToken\":{}", Value::from(next)));
    }
    json.push('}');
    Ok(json_response(json))
}

/// The BEGINS_WITH value of `StreamNameCondition`, or `""`.
fn name_prefix(body: &Value) -> Result<String, ApiError> {
    let Some(condition) = member(body, "StreamNameCondition") else {
        return Ok(String::new());
    };
    if let Some(operator) = member(condition, "ComparisonOperator")
        && operator.as_str() != Some("BEGINS_WITH")
    {
        return Err(ApiError::invalid_argument(format!(
            "1 validation error detected: Value {operator} at \
             'streamNameCondition.comparisonOperator' failed to satisfy constraint: Member \
             must satisfy enum value set: [BEGINS_WITH]"
        )));
    }
    match member(condition, "ComparisonValue") {
        None => Ok(String::new()),
        Some(Value::String(v)) if is_stream_name(v) => Ok(v.clone()),
        Some(other) => Err(ApiError::invalid_argument(pattern(
            "streamNameCondition.comparisonValue",
            other,
            "[a-zA-Z0-9_.-]+",
        ))),
    }
}

/// The offset a NextToken holds, if it was issued for the same prefix.
fn read_token(next_token: &str, prefix: &str) -> Option<usize> {
    let fields = token::decode(next_token)?;
    let [kind, issued_for, offset] = <[String; 3]>::try_from(fields).ok()?;
    (kind == TOKEN_KIND && issued_for == prefix)
        .then(|| offset.parse().ok())
        .flatten()
}

/// A `StreamInfo` object, members in the model's order.
fn stream_info(spec: &Stream) -> String {
    let text = |s: &str| Value::from(s).to_string();
    let retention_hours = spec
        .retention_ms
        .map_or(KEEP_FOREVER_HOURS, |ms| ms.div_ceil(3_600_000));
    let kms_key = format!(
        "arn:aws:kms:{}:123456789012:alias/aws/kinesisvideo",
        spec.region
    );
    format!(
        "{{\"DeviceName\":{},\"StreamName\":{},\"StreamARN\":{},\"MediaType\":{},\
         \"KmsKeyId\":{},\"Version\":{},\"Status\":\"ACTIVE\",\"CreationTime\":{},\
         \"DataRetentionInHours\":{retention_hours}}}",
        text("kvs-emu"),
        text(&spec.name),
        text(&spec.arn()),
        text(&spec.media_type),
        text(&kms_key),
        text(&version(spec)),
        java_double::seconds(CREATION_MS),
    )
}

/// A stable `Version` per stream (the service's is an opaque alphanumeric string).
fn version(spec: &Stream) -> String {
    let mut hasher = DefaultHasher::new();
    spec.name.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stream_info_has_the_model_shape() {
        let mut stream = Stream::archive("cam1", Vec::new());
        stream.retention_ms = Some(3_600_001);
        let info: Value = serde_json::from_str(&stream_info(&stream)).unwrap();
        assert_eq!(info["StreamName"], "cam1");
        assert_eq!(info["StreamARN"], stream.arn().as_str());
        assert_eq!(info["Status"], "ACTIVE");
        assert_eq!(info["DataRetentionInHours"], 2);
        assert_eq!(info["CreationTime"], json!(1.7e9));
        assert!(stream_info(&stream).contains("\"CreationTime\":1.7E9"));
    }

    #[test]
    fn tokens_belong_to_their_prefix() {
        let t = token::encode(&[TOKEN_KIND.to_owned(), "cam".into(), "3".into()]);
        assert_eq!(read_token(&t, "cam"), Some(3));
        assert_eq!(read_token(&t, ""), None);
        assert_eq!(read_token("zz", "cam"), None);
    }
}
