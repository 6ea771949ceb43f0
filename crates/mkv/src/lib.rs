//! Matroska for kvs-dl, without I/O: an incremental reader of Kinesis Video Streams GetMedia
//! bodies ([`Parser`]) and the EBML primitives it is built on. Nothing here touches files,
//! sockets or clocks, so the parser can be fed from memory in tests and fuzzed.

pub mod chunk;
pub mod ebml;
pub mod parser;
pub mod span;
pub mod timeline;
pub mod tracks;
pub mod writer;

pub use chunk::Chunk;
pub use parser::{
    Block, BlockKind, Event, Finish, Fragment, Millis, ParseError, Parser, ServiceError,
    cmp_fragment_numbers,
};
pub use writer::{Muxer, Options, Patch, Recovery, RecoveryError, Refusal};
