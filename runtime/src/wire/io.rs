//! Reading and writing frames on quinn streams.
//!
//! [`FrameReader::read_frame`] reads exactly one frame and nothing more, so a caller that awaits
//! a reservation (e.g. a bounded mailbox permit) before calling it leaves unread data in QUIC's
//! receive window and flow control pushes back on the sender.
//!
//! Memory is bounded by what actually arrives: the header is validated before anything is
//! buffered, and body/tail buffers grow with the received chunks, never to an announced length
//! up front. A reader created by the transport closes the peer's connection on a framing
//! violation (garbage, wrong type, oversize), so the upper layer only has to drop the stream.

use bytes::{Bytes, BytesMut};
use quinn::{Connection, ReadError, RecvStream, SendStream, VarInt, WriteError};

use super::frame::{Frame, FrameError, FrameHeader, FrameLimits, HEADER_LEN, TypeSet, WireMessage};

/// Application error code used to close a connection after a protocol violation.
pub const CLOSE_PROTOCOL_ERROR: u32 = 3;

/// Errors reading or writing frames on a stream.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The peer sent an invalid frame (the connection has been closed if the reader owned one).
    #[error("protocol violation: {0}")]
    Frame(#[from] FrameError),
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({missing} bytes missing)")]
    Truncated {
        /// Bytes still missing.
        missing: u64,
    },
    /// Reading failed (connection lost, stream reset...).
    #[error("read failed: {0}")]
    Read(#[from] ReadError),
    /// Writing failed (connection lost, stream stopped...).
    #[error("write failed: {0}")]
    Write(#[from] WriteError),
    /// The stream was already finished or closed locally.
    #[error("stream closed")]
    Closed,
}

/// Reads frames from a quinn receive stream.
#[derive(Debug)]
pub struct FrameReader {
    recv: RecvStream,
    limits: FrameLimits,
    types: TypeSet,
    conn: Option<Connection>,
}

impl FrameReader {
    /// A reader accepting `types` within `limits`. If `conn` is given, a framing violation
    /// closes that connection with [`CLOSE_PROTOCOL_ERROR`].
    pub fn new(
        recv: RecvStream,
        limits: FrameLimits,
        types: TypeSet,
        conn: Option<Connection>,
    ) -> FrameReader {
        FrameReader {
            recv,
            limits,
            types,
            conn,
        }
    }

    /// Changes the accepted message types for the following frames.
    pub fn set_types(&mut self, types: TypeSet) {
        self.types = types;
    }

    /// Reads the next frame; `Ok(None)` when the peer finished the stream at a frame boundary.
    ///
    /// Cancel-safety: not cancel-safe (a frame may be partially consumed); await a
    /// reservation BEFORE calling it, not concurrently.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, WireError> {
        let r = self.read_inner().await;
        if let Err(e) = &r
            && matches!(e, WireError::Frame(_) | WireError::Truncated { .. })
            && let Some(conn) = &self.conn
        {
            tracing::warn!(peer = %conn.remote_address(), error = %e, "protocol violation on stream; closing connection");
            conn.close(
                VarInt::from_u32(CLOSE_PROTOCOL_ERROR),
                format!("protocol violation: {e}").as_bytes(),
            );
        }
        r
    }

    async fn read_inner(&mut self) -> Result<Option<Frame>, WireError> {
        let mut raw = [0u8; HEADER_LEN];
        let mut got = 0;
        while got < HEADER_LEN {
            match self.recv.read(&mut raw[got..]).await? {
                Some(n) => got += n,
                None if got == 0 => return Ok(None),
                None => {
                    return Err(WireError::Truncated {
                        missing: (HEADER_LEN - got) as u64,
                    });
                }
            }
        }
        let h = FrameHeader::decode(&raw, &self.limits, &self.types)?;
        let body = self.read_bytes(h.body_len as usize).await?;
        let tail = self.read_bytes(h.tail_len as usize).await?;
        Ok(Some(Frame {
            msg_type: h.msg_type,
            flags: h.flags,
            body,
            tail,
        }))
    }

    /// Reads exactly `len` bytes (already checked against the limits), buffering only what
    /// arrives.
    async fn read_bytes(&mut self, len: usize) -> Result<Bytes, WireError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let mut first: Option<Bytes> = None;
        let mut buf: Option<BytesMut> = None;
        let mut have = 0usize;
        while have < len {
            let chunk = match self.recv.read_chunk(len - have, true).await? {
                Some(c) => c.bytes,
                None => {
                    return Err(WireError::Truncated {
                        missing: (len - have) as u64,
                    });
                }
            };
            have += chunk.len();
            match (&mut first, &mut buf) {
                (None, None) => first = Some(chunk),
                (Some(f), None) => {
                    let mut b = BytesMut::with_capacity(f.len() + chunk.len());
                    b.extend_from_slice(f);
                    b.extend_from_slice(&chunk);
                    first = None;
                    buf = Some(b);
                }
                (_, Some(b)) => b.extend_from_slice(&chunk),
            }
        }
        Ok(match buf {
            Some(b) => b.freeze(),
            None => first.unwrap_or_default(),
        })
    }

    /// Reads the next frame and decodes it as `M`; returns the message and the raw tail.
    pub async fn read_message<M: WireMessage>(&mut self) -> Result<Option<(M, Bytes)>, WireError> {
        match self.read_frame().await? {
            None => Ok(None),
            Some(f) => {
                let m = f.decode::<M>();
                match m {
                    Ok(m) => Ok(Some((m, f.tail))),
                    Err(e) => {
                        if let Some(conn) = &self.conn {
                            tracing::warn!(peer = %conn.remote_address(), error = %e, "undecodable message; closing connection");
                            conn.close(
                                VarInt::from_u32(CLOSE_PROTOCOL_ERROR),
                                format!("protocol violation: {e}").as_bytes(),
                            );
                        }
                        Err(e.into())
                    }
                }
            }
        }
    }

    /// Tells the peer to stop sending on this stream (error code `code`).
    pub fn stop(&mut self, code: u32) {
        let _ = self.recv.stop(VarInt::from_u32(code));
    }

    /// The underlying quinn stream.
    pub fn into_inner(self) -> RecvStream {
        self.recv
    }
}

/// Writes frames to a quinn send stream.
#[derive(Debug)]
pub struct FrameWriter {
    send: SendStream,
    limits: FrameLimits,
}

impl FrameWriter {
    /// A writer refusing frames beyond `limits`.
    pub fn new(send: SendStream, limits: FrameLimits) -> FrameWriter {
        FrameWriter { send, limits }
    }

    /// Writes one frame (header and body in one chunk, the tail without copying). Waits while
    /// QUIC flow control blocks the stream.
    pub async fn write_frame(&mut self, frame: &Frame) -> Result<(), WireError> {
        let h = frame.header(&self.limits)?;
        let mut head = BytesMut::with_capacity(HEADER_LEN + frame.body.len());
        head.extend_from_slice(&h.encode());
        head.extend_from_slice(&frame.body);
        let mut chunks = [head.freeze(), frame.tail.clone()];
        let n = if frame.tail.is_empty() { 1 } else { 2 };
        self.send.write_all_chunks(&mut chunks[..n]).await?;
        Ok(())
    }

    /// Encodes and writes a typed message with a raw tail.
    pub async fn send<M: WireMessage>(&mut self, msg: &M, tail: Bytes) -> Result<(), WireError> {
        let f = Frame::from_message(msg, tail)?;
        self.write_frame(&f).await
    }

    /// Finishes the stream (the peer's reader then returns `Ok(None)`).
    pub fn finish(&mut self) -> Result<(), WireError> {
        self.send.finish().map_err(|_| WireError::Closed)
    }

    /// Abandons the stream with error code `code`.
    pub fn reset(&mut self, code: u32) {
        let _ = self.send.reset(VarInt::from_u32(code));
    }

    /// The underlying quinn stream.
    pub fn into_inner(self) -> SendStream {
        self.send
    }
}
