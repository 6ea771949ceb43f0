//! kvs-dl: download Amazon Kinesis Video Streams to local files.
//!
//! Modules in data-path order: flags ([`cli`]) resolve into a plain [`config::Config`]; [`aws`]
//! talks to the service; [`download`] drives GetMedia bodies through the `mkv` parser into an
//! [`output`] writer over a [`sink`]; [`progress`] reports; [`error`] is the one error type.

pub mod aws;
pub mod cli;
pub mod config;
pub mod download;
pub mod error;
pub mod output;
pub mod progress;
pub mod run;
pub mod sink;
pub mod state;

pub use error::Error;
