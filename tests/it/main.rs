//! kvs-dl end to end: the real binary, through the real AWS SDK, against `kvs-emu` on loopback.

mod archive;
mod browser;
mod cron;
mod deploy;
mod download;
mod errors;
mod fleet;
mod matrix;
mod media;
mod mp4;
mod progress;
mod resilience;
mod s3;
mod support;
