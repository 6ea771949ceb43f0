//! `kvs-emu`: a local Amazon Kinesis Video Streams emulator for testing clients without AWS.
//!
//! It answers GetDataEndpoint, DescribeStream and ListStreams on a control-plane listener, and
//! GetMedia, ListFragments and GetMediaForFragmentList on a data-plane listener, byte for byte
//! like the service (kvs-protocol.md): SigV4-checked requests, AWS error shapes, chunked bodies
//! of one Matroska document per fragment with the KVS tags around each cluster, live streams
//! whose fragments arrive over time, an eventually consistent archive, the service's per-API
//! limits, a per-connection bandwidth cap, and scripted faults.
//! The control plane also answers STS AssumeRole, and the temporary credentials it issues are
//! then accepted (and checked) like the long-term key, so role assumption is testable offline.
//!
//! ```no_run
//! use kvs_emu::{Config, Emulator, Stream, SyntheticSpec, synthetic};
//!
//! let emulator = Emulator::start(Config {
//!     streams: vec![Stream::archive("demo", synthetic(&SyntheticSpec::default()))],
//!     ..Config::default()
//! })?;
//! println!("control endpoint: {}", emulator.endpoint());
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Fragments come from a GetMedia capture ([`from_capture`]), a plain Matroska file
//! ([`from_mkv`]) or a generator that needs no media at all ([`synthetic`]).

mod archive;
mod capture;
mod config;
mod credentials;
mod emulator;
mod error;
mod faults;
mod fragment;
mod java_double;
mod pace;
mod query;
mod remux;
mod requests;
mod selector;
mod server;
mod session;
mod sigv4;
mod stream_info;
mod sts;
mod synthetic;
mod tags;
mod timeline;
mod token;

pub use capture::{from_capture, is_capture};
pub use config::{ACCESS_KEY, Config, Live, SECRET_KEY, Stream};
pub use emulator::Emulator;
pub use faults::{CallFault, FragmentFault};
pub use fragment::{
    FRAGMENT_NUMBER_STEP, Ingest, SourceError, StoredFragment, cmp_fragment_numbers,
};
pub use remux::{MkvOptions, from_mkv};
pub use requests::{BodyEnd, Plane, Request};
pub use synthetic::{SyntheticSpec, synthetic};
