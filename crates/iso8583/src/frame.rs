//! Framing on the wire: a 2-byte big-endian length, then optionally a 5-byte
//! TPDU (`60 DDDD SSSS`) and a dialect header (6 bytes for UnionPay-style
//! terminals), then the ISO 8583 message.
//!
//! As in mini-redis, a frame is checked for completeness before it is
//! parsed, and a length over the configured maximum is refused before any
//! buffer grows to hold it.

use thiserror::Error;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX: usize = 2;
/// Bytes of a TPDU.
pub const TPDU_LEN: usize = 5;

/// A transport protocol data unit: id (0x60), destination and source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tpdu {
    /// TPDU id, 0x60 for transactions.
    pub id: u8,
    /// Destination address (NII of the host for a request).
    pub destination: u16,
    /// Source address.
    pub source: u16,
}

impl Tpdu {
    /// The TPDU of the reply: source and destination swapped.
    pub fn reply(&self) -> Tpdu {
        Tpdu {
            id: self.id,
            destination: self.source,
            source: self.destination,
        }
    }

    /// The five wire bytes.
    pub fn to_bytes(&self) -> [u8; TPDU_LEN] {
        let d = self.destination.to_be_bytes();
        let s = self.source.to_be_bytes();
        [self.id, d[0], d[1], s[0], s[1]]
    }

    /// From five wire bytes.
    pub fn from_bytes(b: [u8; TPDU_LEN]) -> Tpdu {
        Tpdu {
            id: b[0],
            destination: u16::from_be_bytes([b[1], b[2]]),
            source: u16::from_be_bytes([b[3], b[4]]),
        }
    }
}

/// What a frame holds besides the message, and how large it may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLayout {
    /// Whether a TPDU follows the length.
    pub tpdu: bool,
    /// Bytes of dialect header after the TPDU.
    pub header_len: usize,
    /// Largest accepted frame body (everything after the length prefix).
    pub max_len: usize,
}

impl FrameLayout {
    /// UnionPay-style terminals: TPDU and a 6-byte header; bodies up to 4 KiB,
    /// well above the largest `cup` message a terminal sends.
    pub const CUP: FrameLayout = FrameLayout {
        tpdu: true,
        header_len: 6,
        max_len: 4096,
    };

    /// Length prefix only.
    pub const PLAIN: FrameLayout = FrameLayout {
        tpdu: false,
        header_len: 0,
        max_len: 8192,
    };

    fn min_len(&self) -> usize {
        (if self.tpdu { TPDU_LEN } else { 0 }) + self.header_len
    }

    /// Checks whether `buf` begins with a complete frame. `Ok(None)`: more
    /// bytes are needed; `Ok(Some(n))`: the first `n` bytes are one frame.
    /// A declared length over the maximum or under the TPDU and header is an
    /// error at once, so the caller never buffers it.
    pub fn check(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(prefix) = buf.get(..LENGTH_PREFIX) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
        if len > self.max_len {
            return Err(FrameError::TooLong {
                len,
                max: self.max_len,
            });
        }
        if len < self.min_len() {
            return Err(FrameError::TooShort {
                len,
                min: self.min_len(),
            });
        }
        Ok((buf.len() >= LENGTH_PREFIX + len).then_some(LENGTH_PREFIX + len))
    }

    /// Splits one complete frame (as delimited by [`FrameLayout::check`]).
    pub fn parse<'a>(&self, frame: &'a [u8]) -> Result<Frame<'a>, FrameError> {
        match self.check(frame)? {
            Some(n) if n == frame.len() => {}
            Some(n) => {
                return Err(FrameError::Trailing {
                    count: frame.len() - n,
                });
            }
            None => return Err(FrameError::Incomplete),
        }
        let body = &frame[LENGTH_PREFIX..];
        let (tpdu, rest) = if self.tpdu {
            let (t, rest) = body.split_at(TPDU_LEN);
            (
                Some(Tpdu::from_bytes(t.try_into().expect("split at TPDU_LEN"))),
                rest,
            )
        } else {
            (None, body)
        };
        let (header, message) = rest.split_at(self.header_len);
        Ok(Frame {
            tpdu,
            header,
            message,
        })
    }

    /// Appends a frame holding `message` to `out`.
    pub fn write(
        &self,
        tpdu: Option<Tpdu>,
        header: &[u8],
        message: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), FrameError> {
        if tpdu.is_some() != self.tpdu {
            return Err(FrameError::TpduMismatch {
                expected: self.tpdu,
            });
        }
        if header.len() != self.header_len {
            return Err(FrameError::HeaderLength {
                len: header.len(),
                expected: self.header_len,
            });
        }
        let len = self.min_len() + message.len();
        if len > self.max_len || len > usize::from(u16::MAX) {
            return Err(FrameError::TooLong {
                len,
                max: self.max_len.min(usize::from(u16::MAX)),
            });
        }
        out.reserve(LENGTH_PREFIX + len);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        if let Some(t) = tpdu {
            out.extend_from_slice(&t.to_bytes());
        }
        out.extend_from_slice(header);
        out.extend_from_slice(message);
        Ok(())
    }
}

/// One frame's parts, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The TPDU, when the layout has one.
    pub tpdu: Option<Tpdu>,
    /// The dialect header bytes.
    pub header: &'a [u8],
    /// The ISO 8583 message (MTI onwards).
    pub message: &'a [u8],
}

/// A frame is malformed or does not fit the layout.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// Declared or requested length over the maximum.
    #[error("frame length {len} over maximum {max}")]
    TooLong {
        /// The length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// Declared length too small to hold the TPDU and header.
    #[error("frame length {len} under the minimum {min} (TPDU and header)")]
    TooShort {
        /// The length.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// Fewer bytes than the length prefix declares.
    #[error("incomplete frame")]
    Incomplete,
    /// More bytes than the length prefix declares.
    #[error("{count} bytes after the frame")]
    Trailing {
        /// How many.
        count: usize,
    },
    /// A TPDU was given where the layout has none, or the reverse.
    #[error("layout expects a TPDU: {expected}")]
    TpduMismatch {
        /// Whether the layout has one.
        expected: bool,
    },
    /// The header has the wrong size.
    #[error("header of {len} bytes, layout expects {expected}")]
    HeaderLength {
        /// Given.
        len: usize,
        /// Expected.
        expected: usize,
    },
    /// The connection failed (tokio codec only).
    #[cfg(feature = "codec")]
    #[error("I/O: {0}")]
    Io(String),
}

#[cfg(feature = "codec")]
pub use codec::{FrameCodec, OwnedFrame};

#[cfg(feature = "codec")]
mod codec {
    //! A tokio-util codec over [`FrameLayout`], for the network crates.
    use super::{FrameError, FrameLayout, Tpdu};
    use bytes::{Buf, Bytes, BytesMut};
    use tokio_util::codec::{Decoder, Encoder};

    /// An owned frame, as the codec yields and takes it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct OwnedFrame {
        /// The TPDU, when the layout has one.
        pub tpdu: Option<Tpdu>,
        /// The dialect header.
        pub header: Bytes,
        /// The ISO 8583 message.
        pub message: Bytes,
    }

    /// Length-delimited ISO 8583 frames for `tokio_util::codec::Framed`.
    #[derive(Debug, Clone, Copy)]
    pub struct FrameCodec {
        layout: FrameLayout,
    }

    impl FrameCodec {
        /// A codec for `layout`.
        pub fn new(layout: FrameLayout) -> Self {
            FrameCodec { layout }
        }
    }

    impl From<std::io::Error> for FrameError {
        fn from(e: std::io::Error) -> Self {
            FrameError::Io(e.to_string())
        }
    }

    impl Decoder for FrameCodec {
        type Item = OwnedFrame;
        type Error = FrameError;

        fn decode(&mut self, src: &mut BytesMut) -> Result<Option<OwnedFrame>, FrameError> {
            let Some(n) = self.layout.check(src)? else {
                // Reserve only what the (already bounded) prefix announces.
                if src.len() >= 2 {
                    let len = usize::from(u16::from_be_bytes([src[0], src[1]]));
                    src.reserve(2 + len - src.len().min(2 + len));
                }
                return Ok(None);
            };
            let mut frame = src.split_to(n).freeze();
            frame.advance(super::LENGTH_PREFIX);
            let tpdu = if self.layout.tpdu {
                let t = frame.split_to(super::TPDU_LEN);
                Some(Tpdu::from_bytes(t[..].try_into().expect("split TPDU_LEN")))
            } else {
                None
            };
            let header = frame.split_to(self.layout.header_len);
            Ok(Some(OwnedFrame {
                tpdu,
                header,
                message: frame,
            }))
        }
    }

    impl Encoder<OwnedFrame> for FrameCodec {
        type Error = FrameError;

        fn encode(&mut self, item: OwnedFrame, dst: &mut BytesMut) -> Result<(), FrameError> {
            let mut out = Vec::new();
            self.layout
                .write(item.tpdu, &item.header, &item.message, &mut out)?;
            dst.extend_from_slice(&out);
            Ok(())
        }
    }
}
