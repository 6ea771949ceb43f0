//! STS AssumeRole on the control-plane listener. A client told to assume a role (aws-config's
//! `AssumeRoleProvider`, kvs-dl's `--role-arn`) calls STS on the same endpoint_url it uses for
//! everything else; answering it here lets that path be tested offline, end to end, with the
//! temporary credentials it hands out then checked on every Kinesis Video Streams call.

use axum::http::StatusCode;
use axum::response::Response;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use crate::credentials::{Identity, Keyring, RoleSession, Temporary};
use crate::error::{ApiError, null_member};
use crate::query;
use crate::sigv4::AuthError;

/// The signing name of STS.
pub const SERVICE: &str = "sts";
/// The XML namespace of STS answers.
pub const NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
/// The API version the SDKs send.
const VERSION: &str = "2011-06-15";
/// How long issued credentials last unless `DurationSeconds` asks for less: the IAM default
/// for a role's maximum session, so asking for more is refused as AWS refuses it.
const MAX_SESSION_S: i64 = 3600;
/// The shortest session STS grants.
const MIN_SESSION_S: i64 = 900;

/// What an STS request may use of the emulator.
#[derive(Debug, Clone, Copy)]
pub struct Sts<'a> {
    pub keys: &'a Keyring,
    /// Roles that may be assumed; empty: any role.
    pub roles: &'a [String],
}

impl Sts<'_> {
    /// Runs the action a form names (`fields` from [`query::form_fields`]) for `caller`, at
    /// `now`. Only AssumeRole exists.
    pub fn answer(
        &self,
        caller: &Identity,
        fields: &Value,
        request_id: &str,
        now: Timestamp,
    ) -> Result<Response, ApiError> {
        let field = |name: &str| fields.get(name).and_then(Value::as_str);
        let action = field("Action").ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "MissingAction", "Missing Action")
        })?;
        let version = field("Version").unwrap_or_default();
        if action != "AssumeRole" || version != VERSION {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidAction",
                format!("Could not find operation {action} for version {version}"),
            ));
        }
        let request = AssumeRole::parse(field)?;
        let denied = || {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                format!(
                    "User: {} is not authorized to perform: sts:AssumeRole on resource: {}",
                    caller.arn(),
                    request.session.role_arn
                ),
            )
        };
        // Temporary credentials cannot assume a role here: only the long-term key may.
        if *caller != Identity::User {
            return Err(denied());
        }
        if !self.roles.is_empty() && !self.roles.contains(&request.session.role_arn) {
            return Err(denied());
        }
        let issued = self.keys.issue(request.session, now, request.lifetime);
        Ok(query::xml_response(assume_role_response(
            &issued, request_id,
        )))
    }
}

/// The parameters of one AssumeRole call.
#[derive(Debug, PartialEq)]
struct AssumeRole {
    session: RoleSession,
    lifetime: SignedDuration,
}

impl AssumeRole {
    /// Checks the parameters like STS does; the error is a ValidationError.
    fn parse<'a>(field: impl Fn(&str) -> Option<&'a str>) -> Result<AssumeRole, ApiError> {
        let role_arn = field("RoleArn").ok_or_else(|| validation(null_member("roleArn")))?;
        if !is_role_arn(role_arn) {
            return Err(validation(constraint(
                "roleArn",
                role_arn,
                "Member must be a role ARN, arn:aws:iam::<12 digits>:role/<name>",
            )));
        }
        let session_name =
            field("RoleSessionName").ok_or_else(|| validation(null_member("roleSessionName")))?;
        if !((2..=64).contains(&session_name.len()) && session_name.bytes().all(is_name_byte)) {
            return Err(validation(constraint(
                "roleSessionName",
                session_name,
                r"Member must satisfy regular expression pattern: [\w+=,.@-]{2,64}",
            )));
        }
        let seconds = match field("DurationSeconds") {
            None => MAX_SESSION_S,
            Some(text) => match text.parse::<i64>() {
                Ok(s) if s > MAX_SESSION_S => {
                    return Err(validation(
                        "The requested DurationSeconds exceeds the MaxSessionDuration set for \
                         this role."
                            .to_owned(),
                    ));
                }
                Ok(s) if s >= MIN_SESSION_S => s,
                _ => {
                    return Err(validation(constraint(
                        "durationSeconds",
                        text,
                        "Member must have value greater than or equal to 900",
                    )));
                }
            },
        };
        Ok(AssumeRole {
            session: RoleSession {
                role_arn: role_arn.to_owned(),
                session_name: session_name.to_owned(),
            },
            lifetime: SignedDuration::from_secs(seconds),
        })
    }
}

/// `arn:aws:iam::<12 digits>:role/<name>`, the name possibly under a path (`role/a/b/name`);
/// also in the aws-cn and aws-us-gov partitions.
pub fn is_role_arn(arn: &str) -> bool {
    let mut parts = arn.splitn(6, ':');
    let [
        Some("arn"),
        Some(partition),
        Some("iam"),
        Some(""),
        Some(account),
        Some(resource),
    ] = std::array::from_fn(|_| parts.next())
    else {
        return false;
    };
    let Some(path) = resource.strip_prefix("role/") else {
        return false;
    };
    matches!(partition, "aws" | "aws-cn" | "aws-us-gov")
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && arn.len() <= 2048
        && path
            .rsplit('/')
            .next()
            .is_some_and(|name| (1..=64).contains(&name.len()))
        && path
            .split('/')
            .all(|part| !part.is_empty() && part.bytes().all(is_name_byte))
}

/// IAM names and session names: `[\w+=,.@-]`.
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b)
}

fn validation(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "ValidationError", message)
}

fn constraint(member: &str, value: &str, rule: &str) -> String {
    format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy \
         constraint: {rule}"
    )
}

/// The errors STS answers a request it cannot authenticate with, in its own codes.
pub fn auth_error(e: AuthError) -> ApiError {
    let forbidden = |code, message: &str| ApiError::new(StatusCode::FORBIDDEN, code, message);
    match e {
        AuthError::Missing => forbidden(
            "MissingAuthenticationToken",
            "Request is missing Authentication Token",
        ),
        AuthError::Malformed(why) => {
            ApiError::new(StatusCode::BAD_REQUEST, "IncompleteSignature", why)
        }
        AuthError::UnknownKey | AuthError::InvalidToken => forbidden(
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        ),
        AuthError::ExpiredToken => forbidden(
            "ExpiredToken",
            "The security token included in the request is expired",
        ),
        AuthError::WrongService { expected } => forbidden(
            "SignatureDoesNotMatch",
            &format!("Credential should be scoped to correct service: '{expected}'. "),
        ),
        AuthError::Mismatch => forbidden(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details.",
        ),
    }
}

/// The `AssumeRoleResponse` document (aws-sdk-sts `shape_assume_role.rs`: the result must be the
/// root's first child).
fn assume_role_response(issued: &Temporary, request_id: &str) -> String {
    let key = &issued.key;
    let e = query::escape;
    format!(
        "<AssumeRoleResponse xmlns=\"{NAMESPACE}\">\n  <AssumeRoleResult>\n    <Credentials>\n      \
         <AccessKeyId>{}</AccessKeyId>\n      <SecretAccessKey>{}</SecretAccessKey>\n      \
         <SessionToken>{}</SessionToken>\n      <Expiration>{}</Expiration>\n    \
         </Credentials>\n    <AssumedRoleUser>\n      <AssumedRoleId>{}</AssumedRoleId>\n      \
         <Arn>{}</Arn>\n    </AssumedRoleUser>\n  </AssumeRoleResult>\n  <ResponseMetadata>\n    \
         <RequestId>{}</RequestId>\n  </ResponseMetadata>\n</AssumeRoleResponse>\n",
        e(&key.access_key),
        e(&key.secret_key),
        e(key.session_token.as_deref().unwrap_or_default()),
        issued.expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        e(&issued.session.assumed_role_id()),
        e(&issued.session.arn()),
        e(request_id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ROLE: &str = "arn:aws:iam::123456789012:role/reader";

    #[test]
    fn role_arns_have_the_iam_shape() {
        for good in [
            ROLE,
            "arn:aws:iam::000000000000:role/team/sub/reader",
            "arn:aws-cn:iam::123456789012:role/a_b+c=d,e.f@g-h",
        ] {
            assert!(is_role_arn(good), "{good}");
        }
        for bad in [
            "",
            "reader",
            "arn:aws:iam::12345678901:role/reader",
            "arn:aws:iam::123456789012:user/reader",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role//reader",
            "arn:aws:iam:us-east-1:123456789012:role/reader",
            "arn:aws:sts::123456789012:role/reader",
            "arn:other:iam::123456789012:role/reader",
            "arn:aws:iam::123456789012:role/a b",
            "arn:aws:iam::123456789012:role/<x>",
        ] {
            assert!(!is_role_arn(bad), "{bad}");
        }
        let long = format!("arn:aws:iam::123456789012:role/{}", "n".repeat(65));
        assert!(!is_role_arn(&long));
    }

    fn parse(fields: Value) -> Result<AssumeRole, ApiError> {
        AssumeRole::parse(|name| fields.get(name).and_then(Value::as_str))
    }

    #[test]
    fn parameters_are_checked() {
        let ok = parse(json!({"RoleArn": ROLE, "RoleSessionName": "kvs-dl"})).unwrap();
        assert_eq!(ok.lifetime, SignedDuration::from_hours(1));
        assert_eq!(ok.session.session_name, "kvs-dl");
        let short =
            parse(json!({"RoleArn": ROLE, "RoleSessionName": "s1", "DurationSeconds": "900"}));
        assert_eq!(short.unwrap().lifetime, SignedDuration::from_mins(15));

        let code = |fields| parse(fields).unwrap_err().kind;
        assert_eq!(code(json!({"RoleSessionName": "s1"})), "ValidationError");
        assert_eq!(code(json!({"RoleArn": ROLE})), "ValidationError");
        assert_eq!(
            code(json!({"RoleArn": "r", "RoleSessionName": "s1"})),
            "ValidationError"
        );
        assert_eq!(
            code(json!({"RoleArn": ROLE, "RoleSessionName": "s"})),
            "ValidationError"
        );
        for seconds in ["899", "3601", "1h", ""] {
            let fields =
                json!({"RoleArn": ROLE, "RoleSessionName": "s1", "DurationSeconds": seconds});
            assert_eq!(code(fields), "ValidationError", "{seconds}");
        }
    }

    fn sts_answer(
        keys: &Keyring,
        roles: &[String],
        caller: &Identity,
        action: &str,
    ) -> Result<Response, ApiError> {
        let fields = json!({
            "Action": action,
            "Version": VERSION,
            "RoleArn": ROLE,
            "RoleSessionName": "kvs-dl",
        });
        Sts { keys, roles }.answer(caller, &fields, "id-1", Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn only_allowed_roles_are_assumed_and_only_by_the_user() {
        let keys = Keyring::new("AK".into(), "secret".into());
        assert!(sts_answer(&keys, &[], &Identity::User, "AssumeRole").is_ok());
        let allowed = [ROLE.to_owned()];
        assert!(sts_answer(&keys, &allowed, &Identity::User, "AssumeRole").is_ok());

        let others = ["arn:aws:iam::123456789012:role/writer".to_owned()];
        let denied = sts_answer(&keys, &others, &Identity::User, "AssumeRole").unwrap_err();
        assert_eq!(denied.status, StatusCode::FORBIDDEN);
        assert_eq!(denied.kind, "AccessDenied");
        assert_eq!(
            denied.message,
            format!(
                "User: arn:aws:iam::123456789012:user/kvs-emu is not authorized to perform: \
                 sts:AssumeRole on resource: {ROLE}"
            )
        );
        let role = Identity::Role(RoleSession {
            role_arn: ROLE.into(),
            session_name: "first".into(),
        });
        let chained = sts_answer(&keys, &[], &role, "AssumeRole").unwrap_err();
        assert_eq!(chained.kind, "AccessDenied");
        assert!(chained.message.starts_with(
            "User: arn:aws:sts::123456789012:assumed-role/reader/first is not authorized"
        ));

        let other = sts_answer(&keys, &[], &Identity::User, "GetCallerIdentity").unwrap_err();
        assert_eq!(
            (other.status, other.kind),
            (StatusCode::BAD_REQUEST, "InvalidAction")
        );
    }

    #[test]
    fn the_response_has_the_shape_the_sdk_reads() {
        let keys = Keyring::new("AK".into(), "secret".into());
        let session = RoleSession {
            role_arn: ROLE.into(),
            session_name: "kvs-dl".into(),
        };
        let now: Timestamp = "2026-11-25T18:00:00Z".parse().unwrap();
        let issued = keys.issue(session, now, SignedDuration::from_hours(1));
        let xml = assume_role_response(&issued, "req-1");
        assert!(xml.starts_with(
            "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  \
             <AssumeRoleResult>\n    <Credentials>\n      \
             <AccessKeyId>ASIAKVSEMU0000000001</AccessKeyId>"
        ));
        assert!(xml.contains("<Expiration>2026-11-25T19:00:00Z</Expiration>"));
        assert!(xml.contains("<Arn>arn:aws:sts::123456789012:assumed-role/reader/kvs-dl</Arn>"));
        assert!(xml.contains("<RequestId>req-1</RequestId>"));
    }
}
