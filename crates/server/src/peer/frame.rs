//! Frame codec of peer links: how one message becomes bytes on a TCP stream and back.
//!
//! Layout (all integers big-endian), header of [`HEADER_LEN`] = 12 bytes:
//!
//! ```text
//! +--------+---------+-------------+-------------+---------------------+
//! | magic  | version | payload len | CRC32       | payload (postcard)  |
//! | 2: "KP"| u16     | u32         | u32 of payl.| `payload len` bytes |
//! +--------+---------+-------------+-------------+---------------------+
//! ```
//!
//! The first frame on every connection is a [`Handshake`]; every later frame carries one
//! message of the owner's type. Decoding never panics: each malformed input maps to a
//! [`PeerError`] that the link logs before closing.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::PeerError;

/// Two bytes that start every frame.
pub const FRAME_MAGIC: [u8; 2] = *b"KP";
/// Version of the peer protocol (frame layout + handshake + message encoding).
/// Bump it with every change to what travels on a peer link, so members of
/// different versions refuse each other at the handshake instead of
/// misreading messages. 2: snapshot streams with ids and flow control,
/// keepalive relay acks, `Leaving`, heartbeats carrying the leader's last
/// proposed zxid (2026-12).
pub const PROTOCOL_VERSION: u16 = 2;
/// Size of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 12;
/// Largest handshake payload accepted, whatever `max_frame_bytes` says.
pub const MAX_HANDSHAKE_BYTES: usize = 1024;

/// The first frame each side sends on a new connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handshake {
    /// Must equal [`PROTOCOL_VERSION`].
    pub protocol_version: u16,
    /// Must equal the receiver's `cluster_name`.
    pub cluster: String,
    /// The sender's member id.
    pub member_id: u64,
}

/// A checked frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length in bytes (already checked against the size limit).
    pub len: usize,
    /// CRC32 of the payload as sent.
    pub crc: u32,
}

/// Appends one complete frame (header + postcard payload of `msg`) to `out`.
/// On error `out` is left as it was. Returns the payload length.
pub fn encode_frame<T: Serialize + ?Sized>(
    msg: &T,
    max_frame_bytes: usize,
    out: &mut Vec<u8>,
) -> Result<usize, PeerError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    if let Err(e) = postcard::to_extend(msg, AppendTo(&mut *out)) {
        out.truncate(start);
        return Err(PeerError::Encode(e.to_string()));
    }
    let payload_start = start + HEADER_LEN;
    let len = out.len() - payload_start;
    if len > max_frame_bytes || len > u32::MAX as usize {
        out.truncate(start);
        return Err(PeerError::FrameTooLarge {
            len,
            max: max_frame_bytes,
        });
    }
    let crc = crc32fast::hash(&out[payload_start..]);
    out[start..payload_start].copy_from_slice(&header_bytes(len as u32, crc));
    Ok(len)
}

/// Lets postcard append to a borrowed buffer (so a failed encode can be rolled back).
struct AppendTo<'a>(&'a mut Vec<u8>);

impl Extend<u8> for AppendTo<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

fn header_bytes(len: u32, crc: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..2].copy_from_slice(&FRAME_MAGIC);
    h[2..4].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    h[4..8].copy_from_slice(&len.to_be_bytes());
    h[8..12].copy_from_slice(&crc.to_be_bytes());
    h
}

/// Checks magic, version and size of a header.
pub fn decode_header(
    h: &[u8; HEADER_LEN],
    max_frame_bytes: usize,
) -> Result<FrameHeader, PeerError> {
    let [m0, m1, v0, v1, l0, l1, l2, l3, c0, c1, c2, c3] = *h;
    if [m0, m1] != FRAME_MAGIC {
        return Err(PeerError::BadMagic(u16::from_be_bytes([m0, m1])));
    }
    let version = u16::from_be_bytes([v0, v1]);
    if version != PROTOCOL_VERSION {
        return Err(PeerError::BadVersion(version));
    }
    let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
    if len > max_frame_bytes {
        return Err(PeerError::FrameTooLarge {
            len,
            max: max_frame_bytes,
        });
    }
    Ok(FrameHeader {
        len,
        crc: u32::from_be_bytes([c0, c1, c2, c3]),
    })
}

/// Checks the payload against the header's checksum.
pub fn verify_payload(header: &FrameHeader, payload: &[u8]) -> Result<(), PeerError> {
    if payload.len() != header.len || crc32fast::hash(payload) != header.crc {
        return Err(PeerError::BadChecksum);
    }
    Ok(())
}

/// Decodes a payload; trailing bytes after the value are an error.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, PeerError> {
    match postcard::take_from_bytes::<T>(payload) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(PeerError::Decode(format!(
            "{} trailing bytes after the message",
            rest.len()
        ))),
        Err(e) => Err(PeerError::Decode(e.to_string())),
    }
}

/// Decodes one frame from the start of `buf`. `Ok(None)` means more bytes are needed;
/// `Ok(Some((msg, used)))` gives the message and how many bytes it took.
pub fn decode_frame<T: DeserializeOwned>(
    buf: &[u8],
    max_frame_bytes: usize,
) -> Result<Option<(T, usize)>, PeerError> {
    let Some(h) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let header = decode_header(h, max_frame_bytes)?;
    let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + header.len) else {
        return Ok(None);
    };
    verify_payload(&header, payload)?;
    let msg = decode_payload(payload)?;
    Ok(Some((msg, HEADER_LEN + header.len)))
}

/// Reads one checked frame from `r` into `buf` (resized to the payload). End of stream
/// maps to [`PeerError::Closed`].
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max_frame_bytes: usize,
    buf: &mut Vec<u8>,
) -> Result<(), PeerError> {
    let mut h = [0u8; HEADER_LEN];
    r.read_exact(&mut h).await.map_err(eof_is_closed)?;
    let header = decode_header(&h, max_frame_bytes)?;
    buf.clear();
    buf.resize(header.len, 0);
    r.read_exact(buf).await.map_err(eof_is_closed)?;
    verify_payload(&header, buf)
}

fn eof_is_closed(e: std::io::Error) -> PeerError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        PeerError::Closed
    } else {
        PeerError::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum TestMsg {
        Ping(u64),
        Data { seq: u64, bytes: Vec<u8> },
        Text(String),
    }

    const MAX: usize = 1 << 20;

    fn frame_of(m: &TestMsg) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(m, MAX, &mut out).unwrap();
        out
    }

    #[test]
    fn round_trips() {
        let msgs = vec![
            TestMsg::Ping(0),
            TestMsg::Ping(u64::MAX),
            TestMsg::Data {
                seq: 7,
                bytes: vec![],
            },
            TestMsg::Data {
                seq: 8,
                bytes: (0..=255).collect(),
            },
            TestMsg::Text("héllo".into()),
        ];
        let mut stream = Vec::new();
        for m in &msgs {
            encode_frame(m, MAX, &mut stream).unwrap();
        }
        let mut pos = 0;
        let mut got = Vec::new();
        while let Some((m, used)) = decode_frame::<TestMsg>(&stream[pos..], MAX).unwrap() {
            got.push(m);
            pos += used;
        }
        assert_eq!(pos, stream.len());
        assert_eq!(got, msgs);
    }

    #[test]
    fn handshake_round_trips() {
        let h = Handshake {
            protocol_version: PROTOCOL_VERSION,
            cluster: "c1".into(),
            member_id: 3,
        };
        let mut out = Vec::new();
        encode_frame(&h, MAX_HANDSHAKE_BYTES, &mut out).unwrap();
        let (back, used) = decode_frame::<Handshake>(&out, MAX_HANDSHAKE_BYTES)
            .unwrap()
            .unwrap();
        assert_eq!(back, h);
        assert_eq!(used, out.len());
    }

    #[test]
    fn partial_frame_needs_more() {
        let f = frame_of(&TestMsg::Text("abcdef".into()));
        for cut in 0..f.len() {
            assert!(decode_frame::<TestMsg>(&f[..cut], MAX).unwrap().is_none());
        }
    }

    #[test]
    fn rejects_bad_magic() {
        let mut f = frame_of(&TestMsg::Ping(1));
        f[0] = b'X';
        assert!(matches!(
            decode_frame::<TestMsg>(&f, MAX),
            Err(PeerError::BadMagic(_))
        ));
    }

    #[test]
    fn rejects_bad_version() {
        let mut f = frame_of(&TestMsg::Ping(1));
        f[3] = 9;
        assert!(matches!(
            decode_frame::<TestMsg>(&f, MAX),
            Err(PeerError::BadVersion(9))
        ));
    }

    #[test]
    fn rejects_bad_checksum() {
        let mut f = frame_of(&TestMsg::Text("payload".into()));
        let last = f.len() - 1;
        f[last] ^= 0x01;
        assert!(matches!(
            decode_frame::<TestMsg>(&f, MAX),
            Err(PeerError::BadChecksum)
        ));
        let mut f = frame_of(&TestMsg::Text("payload".into()));
        f[9] ^= 0x80; // corrupt the CRC field itself
        assert!(matches!(
            decode_frame::<TestMsg>(&f, MAX),
            Err(PeerError::BadChecksum)
        ));
    }

    #[test]
    fn rejects_oversized_length_before_reading_payload() {
        let mut f = frame_of(&TestMsg::Ping(1));
        f[4..8].copy_from_slice(&(MAX as u32 + 1).to_be_bytes());
        // Only the header is present: the size check must not wait for the payload.
        assert!(matches!(
            decode_frame::<TestMsg>(&f[..HEADER_LEN], MAX),
            Err(PeerError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn encode_refuses_oversized_message_and_keeps_buffer() {
        let mut out = frame_of(&TestMsg::Ping(5));
        let before = out.clone();
        let big = TestMsg::Data {
            seq: 1,
            bytes: vec![0; 2048],
        };
        assert!(matches!(
            encode_frame(&big, 1024, &mut out),
            Err(PeerError::FrameTooLarge { .. })
        ));
        assert_eq!(out, before);
    }

    #[test]
    fn rejects_undecodable_payload_with_good_checksum() {
        // Variant index 200 does not exist in TestMsg.
        let payload = [200u8, 1, 2];
        let mut f = header_bytes(payload.len() as u32, crc32fast::hash(&payload)).to_vec();
        f.extend_from_slice(&payload);
        assert!(matches!(
            decode_frame::<TestMsg>(&f, MAX),
            Err(PeerError::Decode(_))
        ));
    }

    #[test]
    fn rejects_trailing_bytes_in_payload() {
        let mut payload = postcard::to_stdvec(&TestMsg::Ping(3)).unwrap();
        payload.push(0);
        let mut f = header_bytes(payload.len() as u32, crc32fast::hash(&payload)).to_vec();
        f.extend_from_slice(&payload);
        assert!(matches!(
            decode_frame::<TestMsg>(&f, MAX),
            Err(PeerError::Decode(_))
        ));
    }

    /// splitmix64: a tiny seeded generator so the fuzz loop needs no extra crate.
    fn next(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[test]
    fn random_bytes_never_panic() {
        let seed: u64 = std::env::var("PEER_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5EED_0001);
        println!(
            "seed {seed}; reproduce: PEER_FUZZ_SEED={seed} cargo test -p keeper-server --lib peer::frame::tests::random_bytes_never_panic"
        );
        let mut st = seed;
        let valid = frame_of(&TestMsg::Data {
            seq: 42,
            bytes: vec![7; 40],
        });
        for i in 0..20_000 {
            let mut buf: Vec<u8> = if i % 2 == 0 {
                // Pure noise, sometimes starting with a valid magic+version.
                let n = (next(&mut st) % 64) as usize;
                let mut b: Vec<u8> = (0..n).map(|_| next(&mut st) as u8).collect();
                if i % 4 == 0 && b.len() >= 4 {
                    b[..2].copy_from_slice(&FRAME_MAGIC);
                    b[2..4].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
                }
                b
            } else {
                // A valid frame with a few flipped bytes, possibly truncated.
                let mut b = valid.clone();
                for _ in 0..1 + next(&mut st) % 3 {
                    let at = (next(&mut st) as usize) % b.len();
                    b[at] = next(&mut st) as u8;
                }
                let keep = (next(&mut st) as usize) % (b.len() + 1);
                b.truncate(keep);
                b
            };
            // Also fix up the CRC sometimes so the payload decoder sees garbage.
            if i % 3 == 0 && buf.len() > HEADER_LEN {
                let crc = crc32fast::hash(&buf[HEADER_LEN..]);
                buf[8..12].copy_from_slice(&crc.to_be_bytes());
                let len = (buf.len() - HEADER_LEN) as u32;
                buf[4..8].copy_from_slice(&len.to_be_bytes());
            }
            let _ = decode_frame::<TestMsg>(&buf, MAX);
            let _ = decode_frame::<Handshake>(&buf, MAX_HANDSHAKE_BYTES);
        }
    }

    #[tokio::test]
    async fn read_frame_reads_a_stream_and_reports_eof() {
        let mut stream = Vec::new();
        encode_frame(&TestMsg::Ping(1), MAX, &mut stream).unwrap();
        encode_frame(&TestMsg::Ping(2), MAX, &mut stream).unwrap();
        stream.extend_from_slice(&FRAME_MAGIC); // truncated third header
        let mut r = &stream[..];
        let mut buf = Vec::new();
        read_frame(&mut r, MAX, &mut buf).await.unwrap();
        assert_eq!(decode_payload::<TestMsg>(&buf).unwrap(), TestMsg::Ping(1));
        read_frame(&mut r, MAX, &mut buf).await.unwrap();
        assert_eq!(decode_payload::<TestMsg>(&buf).unwrap(), TestMsg::Ping(2));
        assert!(matches!(
            read_frame(&mut r, MAX, &mut buf).await,
            Err(PeerError::Closed)
        ));
    }
}
