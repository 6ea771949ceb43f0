//! `--state-file s3://BUCKET/KEY`: the state in S3, for runs with no disk of their own.
//!
//! There is no lock to take in S3; conditional writes do the same work. The state is created
//! with `If-None-Match: *` and advanced only with `If-Match: <the ETag this run last saw>`. A run
//! claims the state at its start by writing it back unchanged that way, so an older run still
//! going loses its next save; a run that loses (at the claim or at any save) stops with exit 6
//! and writes nothing more. Some S3-compatible stores accept conditional writes and ignore them
//! (garage does); a probe at the start refuses those.

use std::io;
use std::sync::Mutex;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;

use super::State;
use crate::error::Error;
use crate::s3::{self, S3Url};

/// The state object and the ETag of the version this run holds.
struct Held {
    url: S3Url,
    client: Client,
    etag: Option<String>,
}

static HELD: Mutex<Option<Held>> = Mutex::new(None);

/// Checks that the store honours conditional writes, reads the state, and claims it. `Ok(None)`
/// when there is no state yet (the first save creates it, and fails if another run did first).
pub fn open(url: &S3Url) -> Result<Option<State>, Error> {
    let client = s3::client(&url.bucket).map_err(|e| Error::io("preparing the S3 state", e))?;
    probe(&client, url)?;
    let got = s3::block(client.get_object().bucket(&url.bucket).key(&url.key).send());
    let (state, etag) = match got {
        Ok(out) => {
            let etag = out.e_tag().map(str::to_owned);
            let body = s3::block(out.body.collect())
                .map_err(|e| {
                    Error::io(format!("reading the state file {url}"), io::Error::other(e))
                })?
                .into_bytes();
            let state = super::parse(&body)
                .map_err(|e| Error::io(format!("reading the state file {url}"), e))?;
            let etag = etag.ok_or_else(|| {
                Error::io(
                    format!("reading the state file {url}"),
                    io::Error::other("the store sent no ETag"),
                )
            })?;
            // The claim: the same bytes, written only over the version read.
            let claimed = s3::block(
                client
                    .put_object()
                    .bucket(&url.bucket)
                    .key(&url.key)
                    .content_type("application/json")
                    .if_match(&etag)
                    .body(ByteStream::from(body.to_vec()))
                    .send(),
            );
            match claimed {
                Ok(out) => (Some(state), out.e_tag().map(str::to_owned)),
                Err(e) if matches!(s3::status(&e), Some(412 | 409)) => {
                    return Err(Error::Locked {
                        lock: url.to_string().into(),
                    });
                }
                Err(e) => {
                    return Err(Error::io(
                        format!("claiming the state file {url}"),
                        s3::io_error("PutObject", e),
                    ));
                }
            }
        }
        Err(e) if s3::status(&e) == Some(404) => (None, None),
        Err(e) => {
            return Err(Error::io(
                format!("reading the state file {url}"),
                s3::io_error("GetObject", e),
            ));
        }
    };
    *HELD.lock().expect("not poisoned") = Some(Held {
        url: url.clone(),
        client,
        etag,
    });
    Ok(state)
}

/// Writes the state over the version this run holds; [`s3::Superseded`] when another run
/// advanced it meanwhile.
pub fn save(url: &S3Url, state: &State) -> io::Result<()> {
    let mut held = HELD.lock().expect("not poisoned");
    let held = held
        .as_mut()
        .filter(|h| h.url == *url)
        .ok_or_else(|| io::Error::other(format!("the state file {url} was not opened")))?;
    let mut body = serde_json::to_vec_pretty(state).expect("state serializes");
    body.push(b'\n');
    let request = held
        .client
        .put_object()
        .bucket(&url.bucket)
        .key(&url.key)
        .content_type("application/json")
        .body(ByteStream::from(body));
    let request = match &held.etag {
        Some(etag) => request.if_match(etag),
        None => request.if_none_match("*"),
    };
    match s3::block(request.send()) {
        Ok(out) => {
            held.etag = Some(
                out.e_tag()
                    .ok_or_else(|| io::Error::other("the store sent no ETag"))?
                    .to_owned(),
            );
            Ok(())
        }
        Err(e) if matches!(s3::status(&e), Some(412 | 409)) => Err(s3::superseded(format!(
            "another kvs-dl run advanced the state file {url} since this run read it"
        ))),
        Err(e) => Err(s3::io_error("PutObject", e)),
    }
}

/// Writes a scratch object twice with `If-None-Match: *`: a store that honours conditional
/// writes refuses the second. Refuses the S3 state (exit 2) when it does not.
fn probe(client: &Client, url: &S3Url) -> Result<(), Error> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let key = format!("{}.kvs-dl-probe-{}-{nanos}", url.key, std::process::id());
    // Ok(true): written; Ok(false): refused as the condition asks.
    let put = || -> io::Result<bool> {
        let request = client
            .put_object()
            .bucket(&url.bucket)
            .key(&key)
            .if_none_match("*")
            .body(ByteStream::from_static(
                b"kvs-dl checks conditional writes\n",
            ));
        match s3::block(request.send()) {
            Ok(_) => Ok(true),
            Err(e) if matches!(s3::status(&e), Some(412 | 409)) => Ok(false),
            Err(e) => Err(s3::io_error("PutObject", e)),
        }
    };
    let context = || format!("checking conditional writes beside the state file {url}");
    put().map_err(|e| Error::io(context(), e))?;
    let second = put();
    let _ = s3::block(client.delete_object().bucket(&url.bucket).key(&key).send());
    match second {
        Ok(false) => Ok(()),
        Err(e) => Err(Error::io(context(), e)),
        Ok(true) => Err(Error::usage(
            format!(
                "the S3 store holding --state-file {url} ignores conditional writes (If-None-Match); two runs could both advance the state"
            ),
            Some(
                "keep the state in a local file, or in a store that honours conditional writes (AWS S3, SeaweedFS)"
                    .into(),
            ),
        )),
    }
}
