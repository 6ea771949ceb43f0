//! kvs-dl: download Amazon Kinesis Video Streams to local files.
//!
//! Modules in data-path order: flags ([`cli`]) resolve into a plain [`config::Config`]; [`aws`]
//! talks to the service; [`download`] drives GetMedia bodies through the `mkv` parser into the
//! [`writer`], which turns fragments into files with a per-format [`encoder`] and puts them at a
//! [`destination`]; [`state`] keeps where a run stopped; [`progress`] reports; [`error`] is the
//! one error type.

pub mod aws;
pub mod cli;
pub mod config;
pub mod destination;
pub mod download;
pub mod encoder;
pub mod error;
pub mod fleet;
pub mod inspect;
pub mod ledger;
pub mod listing;
pub mod progress;
pub mod run;
pub mod s3;
pub mod source;
pub mod state;
pub mod writer;

pub use error::Error;
