//! The awsQuery protocol that STS speaks: a form-encoded `POST /` naming its `Action`, answered
//! with XML, `<ActionResponse>` on success and `<ErrorResponse>` on failure, in the shapes the
//! SDKs' generated parsers read.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The form's fields as a JSON object of strings, for the operation and the request log. A field
/// given twice keeps its first value; bytes that are not a form decode leniently, never fail.
pub fn form_fields(body: &[u8]) -> Value {
    let mut fields = Map::new();
    for (name, value) in form_urlencoded::parse(body) {
        fields
            .entry(name.into_owned())
            .or_insert_with(|| Value::String(value.into_owned()));
    }
    Value::Object(fields)
}

/// `text` made safe as XML character data or attribute value (messages quote client input).
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// A 200 answer with an XML document.
pub fn xml_response(body: String) -> Response {
    xml(StatusCode::OK, body)
}

/// The awsQuery error shape. The SDKs take the error code from `Error/Code` (nothing from the
/// headers), and `Type` says whose fault it is: `Sender` for 4xx, `Receiver` for 5xx.
pub fn error_response(error: &ApiError, request_id: &str, namespace: &str) -> Response {
    let fault = if error.status.is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    let body = format!(
        "<ErrorResponse xmlns=\"{}\">\n  <Error>\n    <Type>{fault}</Type>\n    \
         <Code>{}</Code>\n    <Message>{}</Message>\n  </Error>\n  \
         <RequestId>{}</RequestId>\n</ErrorResponse>\n",
        escape(namespace),
        escape(error.kind),
        escape(&error.message),
        escape(request_id),
    );
    let mut response = xml(error.status, body);
    if let Ok(id) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-amzn-requestid", id);
    }
    response
}

fn xml(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn forms_decode_like_the_sdk_encodes_them() {
        let fields = form_fields(
            b"Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012\
              %3Arole%2Freader&RoleSessionName=a+b&RoleSessionName=second",
        );
        assert_eq!(
            fields,
            json!({
                "Action": "AssumeRole",
                "Version": "2011-06-15",
                "RoleArn": "arn:aws:iam::123456789012:role/reader",
                "RoleSessionName": "a b",
            })
        );
        assert_eq!(form_fields(b""), json!({}));
        assert_eq!(
            form_fields(b"%zz=\xff&x"),
            json!({"%zz": "\u{fffd}", "x": ""})
        );
    }

    #[test]
    fn xml_text_is_escaped() {
        assert_eq!(
            escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;"
        );
    }
}
