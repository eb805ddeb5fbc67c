//! Wire framing: a pure frame format ([`frame`]) and async helpers to read and write frames on
//! quinn streams ([`io`]).

pub mod frame;
pub mod io;

pub use frame::{
    DEFAULT_MAX_BODY, DEFAULT_MAX_TAIL, Frame, FrameDecoder, FrameError, FrameHeader, FrameLimits,
    HEADER_LEN, TypeSet, WireMessage,
};
pub use io::{FrameReader, FrameWriter, WireError};
