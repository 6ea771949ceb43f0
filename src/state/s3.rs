//! `--state-file s3://BUCKET/KEY`: the state in S3, for runs with no disk of their own.
//!
//! There is no lock to take in S3; conditional writes do the same work. The state is created
//! with `If-None-Match: *` and advanced only with `If-Match: <the ETag this run last saw>`. A run
//! claims the state once it holds its output, by writing it back unchanged that way, so an older
//! run still going loses its next save; a run that loses (at the claim or at any save) stops
//! with exit 6 and writes nothing more. The claim waits for the output because a local `.part`
//! is locked: a run that finds the file it would continue held by a live run exits 6 before it
//! claims anything, and that run goes on undisturbed. Some S3-compatible stores accept
//! conditional writes and ignore them (garage does); a probe, once per bucket, refuses those.

use std::io;
use std::sync::Mutex;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;

use super::State;
use crate::error::Error;
use crate::s3::{self, S3Url};

/// An S3 state this run read, and the ETag of the version it holds.
pub struct Held {
    url: S3Url,
    client: Client,
    /// The run's runtime, for saves from the state's own thread.
    runtime: tokio::runtime::Handle,
    etag: Option<String>,
    /// The bytes read, written back unchanged by [`Held::claim`]; `None` once claimed.
    read: Option<Vec<u8>>,
}

/// Buckets whose conditional writes were checked in this process: once is enough.
static PROBED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Checks (once per bucket) that the store honours conditional writes, and reads the state.
/// `None` when there is no state yet: the first save creates it, and fails if another run did
/// first. The state is not claimed until [`Held::claim`].
pub async fn open(url: &S3Url) -> Result<(Held, Option<State>), Error> {
    let client = s3::client(&url.bucket).map_err(|e| Error::io("preparing the S3 state", e))?;
    let probed = PROBED.lock().expect("not poisoned").contains(&url.bucket);
    if !probed {
        probe(&client, url).await?;
        PROBED
            .lock()
            .expect("not poisoned")
            .push(url.bucket.clone());
    }
    let reading = || format!("reading the state file {url}");
    let got = client
        .get_object()
        .bucket(&url.bucket)
        .key(&url.key)
        .send()
        .await;
    let (state, etag, read) = match got {
        Ok(out) => {
            let etag = out
                .e_tag()
                .map(str::to_owned)
                .ok_or_else(|| Error::io(reading(), io::Error::other("the store sent no ETag")))?;
            let body = out
                .body
                .collect()
                .await
                .map_err(|e| Error::io(reading(), io::Error::other(e)))?
                .into_bytes()
                .to_vec();
            let state = super::parse(&body).map_err(|e| Error::io(reading(), e))?;
            (Some(state), Some(etag), Some(body))
        }
        Err(e) if s3::status(&e) == Some(404) => (None, None, None),
        Err(e) => return Err(Error::io(reading(), s3::io_error("GetObject", e))),
    };
    let held = Held {
        url: url.clone(),
        client,
        runtime: tokio::runtime::Handle::current(),
        etag,
        read,
    };
    Ok((held, state))
}

impl Held {
    pub fn url(&self) -> &S3Url {
        &self.url
    }

    /// Takes the state over from any older run still going: the bytes read, written back only
    /// over the version read, so that run loses its next save. Exit 6 when another run
    /// advanced the state since it was read.
    pub async fn claim(&mut self) -> Result<(), Error> {
        // Nothing to claim before there is a state: the first save creates it.
        let Some(body) = self.read.take().filter(|_| self.etag.is_some()) else {
            return Ok(());
        };
        let url = &self.url;
        match self.put(body).send().await {
            Ok(out) => {
                self.etag = out.e_tag().map(str::to_owned);
                Ok(())
            }
            Err(e) if matches!(s3::status(&e), Some(412 | 409)) => Err(Error::Locked {
                lock: url.to_string().into(),
            }),
            Err(e) => Err(Error::io(
                format!("claiming the state file {url}"),
                s3::io_error("PutObject", e),
            )),
        }
    }

    /// A PUT of the state's bytes that succeeds only over the version this run holds (or,
    /// before there is one, only where there is none).
    fn put(
        &self,
        body: Vec<u8>,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        let request = self
            .client
            .put_object()
            .bucket(&self.url.bucket)
            .key(&self.url.key)
            .content_type("application/json")
            .body(ByteStream::from(body));
        match &self.etag {
            Some(etag) => request.if_match(etag),
            None => request.if_none_match("*"),
        }
    }

    /// Writes the state over the version this run holds; [`s3::Superseded`] when another run
    /// advanced it meanwhile. Blocks, on a thread other than the runtime's workers.
    pub fn save(&mut self, state: &State) -> io::Result<()> {
        let url = &self.url;
        let mut body = serde_json::to_vec_pretty(state).expect("state serializes");
        body.push(b'\n');
        let sent = s3::block_on(&self.runtime, self.put(body).send())
            .ok_or_else(|| io::Error::other("the run ended before the state was saved"))?;
        match sent {
            Ok(out) => {
                self.read = None;
                self.etag = Some(
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
}

/// Writes a scratch object twice with `If-None-Match: *`: a store that honours conditional
/// writes refuses the second. Refuses the S3 state (exit 2) when it does not.
async fn probe(client: &Client, url: &S3Url) -> Result<(), Error> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let key = format!("{}.kvs-dl-probe-{}-{nanos}", url.key, std::process::id());
    // Ok(true): written; Ok(false): refused as the condition asks.
    let put = || async {
        let request = client
            .put_object()
            .bucket(&url.bucket)
            .key(&key)
            .if_none_match("*")
            .body(ByteStream::from_static(
                b"kvs-dl checks conditional writes\n",
            ));
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if matches!(s3::status(&e), Some(412 | 409)) => Ok(false),
            Err(e) => Err(s3::io_error("PutObject", e)),
        }
    };
    let context = || format!("checking conditional writes beside the state file {url}");
    put().await.map_err(|e| Error::io(context(), e))?;
    let second = put().await;
    let _ = client
        .delete_object()
        .bucket(&url.bucket)
        .key(&key)
        .send()
        .await;
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
