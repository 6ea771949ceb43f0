//! The one error type of kvs-dl, and the exit code each variant maps to.
//!
//! Errors are typed where a caller branches on them (the download loop falls back when a saved
//! token is refused) and rendered once, in `main`, by [`Error::render`]. Messages name the flag or the thing
//! to change; `hint` says what to do next.

use std::fmt::Write as _;

/// What can go wrong in a run. Every variant maps to one documented exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag, a value or a combination of flags is wrong (exit 2).
    #[error("{message}")]
    Usage {
        message: String,
        hint: Option<String>,
    },

    /// No credentials could be found, the signature was refused, or the caller may not read the
    /// stream (exit 3).
    #[error("{message}")]
    Auth {
        message: String,
        hint: Option<String>,
    },

    /// The stream does not exist or is not active (exit 4).
    #[error("stream {stream} not found in {region}")]
    StreamNotFound { stream: String, region: String },

    /// The service or the network kept failing after `--max-retries` attempts (exit 5).
    #[error("gave up after {attempts} failed attempts in a row: {last}")]
    RetriesExhausted { attempts: u32, last: String },

    /// Another run holds the state file or the output file (exit 6).
    #[error("another kvs-dl run holds {}", lock.display())]
    Locked { lock: std::path::PathBuf },

    /// Fragments the listing holds never arrived, after retries (exit 7). The output holds
    /// every other fragment and was finished cleanly.
    #[error("incomplete: {} listed fragment(s) never arrived: {}", lost.len(), lost.join(", "))]
    Incomplete { lost: Vec<String> },

    /// The output format cannot hold the stream's media, e.g. a codec MP4 cannot carry (exit 1).
    #[error("cannot write {format}: {reason}")]
    Unwritable { format: String, reason: String },

    /// The run failed, and finishing its output failed after that (the first error's exit code).
    #[error("{first}; then finishing the output failed too: {then}")]
    Both { first: Box<Error>, then: Box<Error> },

    /// The service refused a parameter (InvalidArgumentException, exit 1).
    #[error("the service rejected the request for stream {stream}: {message}")]
    InvalidArgument { stream: String, message: String },

    /// Writing the output or the state failed (exit 1).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// The GetMedia body could not be parsed (exit 1).
    #[error("the media from the service could not be read: {0}")]
    Media(#[from] mkv::ParseError),

    /// Anything else, with its cause chain (exit 1).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Error {
    /// A usage error with a hint.
    pub fn usage(message: impl Into<String>, hint: impl Into<Option<String>>) -> Self {
        Error::Usage {
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// An I/O error with what was being done when it happened.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// This error, and `then`, which happened while cleaning up after it.
    pub fn and_then(self, then: Error) -> Self {
        Error::Both {
            first: Box::new(self),
            then: Box::new(then),
        }
    }

    /// The exit code documented in the contract for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage { .. } => 2,
            Error::Auth { .. } => 3,
            Error::StreamNotFound { .. } => 4,
            Error::RetriesExhausted { .. } => 5,
            Error::Locked { .. } => 6,
            Error::Incomplete { .. } => 7,
            Error::Both { first, .. } => first.exit_code(),
            // Another run took over an S3 state or upload: the same as a held lock.
            Error::Io { source, .. } if crate::s3::is_superseded(source) => 6,
            Error::InvalidArgument { .. }
            | Error::Unwritable { .. }
            | Error::Io { .. }
            | Error::Media(_)
            | Error::Other(_) => 1,
        }
    }

    /// The reader of `-o -` went away: not worth a message.
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            Error::Io { source, .. } => source.kind() == std::io::ErrorKind::BrokenPipe,
            Error::Both { first, .. } => first.is_broken_pipe(),
            _ => false,
        }
    }

    /// What the user can do about it, when there is something to say.
    fn hint(&self) -> Option<String> {
        match self {
            Error::Usage { hint, .. } | Error::Auth { hint, .. } => hint.clone(),
            Error::StreamNotFound { .. } => Some(
                "check the stream name or ARN and the region (--region, AWS_REGION or the profile)"
                    .into(),
            ),
            Error::RetriesExhausted { .. } => Some(
                "check the network and the service; raise --max-retries to keep trying longer"
                    .into(),
            ),
            Error::Locked { .. } => Some(
                "it is still downloading: let it finish, or give --wait-lock DUR to wait for it"
                    .into(),
            ),
            Error::Unwritable { .. } => Some("use --format mkv, which carries any codec".into()),
            Error::Incomplete { .. } => Some(
                "the service listed them but could not serve them; run again later, or check with `kvs-dl verify --manifest`"
                    .into(),
            ),
            _ => None,
        }
    }

    /// The one line printed on stderr: what went wrong, each cause after a colon, then what to do.
    pub fn render(&self) -> String {
        let mut out = format!("kvs-dl: error: {self}");
        let mut seen = self.to_string();
        let mut source = match self {
            // `Other` is transparent: its own chain starts one level down.
            Error::Other(e) => e.source(),
            _ => std::error::Error::source(self),
        };
        while let Some(cause) = source {
            let text = cause.to_string();
            if !seen.contains(&text) {
                let _ = write!(out, ": {text}");
                seen.push_str(&text);
            }
            source = cause.source();
        }
        if let Some(hint) = self.hint() {
            let _ = write!(out, "; {hint}");
        }
        out.replace('\n', " ")
    }
}
