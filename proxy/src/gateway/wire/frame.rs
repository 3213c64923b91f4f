//! PostgreSQL wire frames, kept as raw bytes.
//!
//! The gateway relays frames rather than terminating the protocol: a frame
//! is read whole (tag, length, body), checked against a size limit, and
//! forwarded byte for byte unless policy needs to change it. Only the
//! messages policy and recording need are decoded, with pgwire's types.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use pgwire::messages::response::{ErrorResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::{DecodeContext, Message, ProtocolVersion};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why a frame could not be read.
#[derive(Debug, Error)]
pub enum FrameError {
    /// The peer closed the connection.
    #[error("connection closed")]
    Closed,
    /// A socket error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The length field is impossible or over the configured limit.
    #[error("frame of {len} bytes (tag {tag:?}) exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The message tag (`'\0'` for startup-phase frames).
        tag: char,
        /// The declared length.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The length field is below the minimum of 4.
    #[error("malformed frame: length {0} is below 4")]
    BadLength(i32),
    /// A message could not be decoded.
    #[error("malformed {what} message: {reason}")]
    Malformed {
        /// Which message.
        what: &'static str,
        /// pgwire's complaint.
        reason: String,
    },
}

/// One whole message: tag byte, then length and body, exactly as received.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The whole frame, tag included.
    pub bytes: BytesMut,
}

impl Frame {
    /// The message tag.
    pub fn tag(&self) -> u8 {
        self.bytes[0]
    }

    /// The body after tag and length.
    pub fn body(&self) -> &[u8] {
        &self.bytes[5..]
    }

    /// Decodes the frame as a pgwire message of type `M`. pgwire's decoders
    /// read without bounds checks, so the body's layout is checked first
    /// ([`check_layout`]); a panic that still happened would be contained
    /// here and reported as a malformed message like any other decoding
    /// failure.
    pub fn decode<M: Message>(&self, what: &'static str) -> Result<M, FrameError> {
        if let Some(tag) = M::message_type() {
            check_layout(tag, self.body()).map_err(|reason| FrameError::Malformed {
                what,
                reason: reason.to_owned(),
            })?;
        }
        let mut buf = self.bytes.clone();
        let ctx = DecodeContext::new(ProtocolVersion::default());
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let r = M::decode(&mut buf, &ctx);
            (r, buf.is_empty())
        }));
        let Ok((decoded, consumed)) = decoded else {
            return Err(FrameError::Malformed {
                what,
                reason: "the message body is inconsistent".into(),
            });
        };
        match decoded {
            Ok(Some(m)) if consumed => Ok(m),
            Ok(Some(_)) => Err(FrameError::Malformed {
                what,
                reason: "trailing bytes after the message".into(),
            }),
            Ok(None) => Err(FrameError::Malformed {
                what,
                reason: "truncated".into(),
            }),
            Err(e) => Err(FrameError::Malformed {
                what,
                reason: e.to_string(),
            }),
        }
    }
}

/// Checks that `body` has the layout of a frontend message with this tag
/// (the ones the gateway decodes: Query, Parse, Bind, Execute, Describe,
/// Close), as the protocol defines it: every string ends with a NUL, every
/// count and length is non-negative (or -1 for a NULL parameter) and
/// matches what follows, and nothing trails. Other tags pass unchecked.
pub fn check_layout(tag: u8, body: &[u8]) -> Result<(), &'static str> {
    let mut r = LayoutReader(body);
    match tag {
        b'Q' => r.cstr()?,
        b'P' => {
            r.cstr()?;
            r.cstr()?;
            let types = r.count()?;
            r.skip(types * 4)?;
        }
        b'B' => {
            r.cstr()?;
            r.cstr()?;
            let formats = r.count()?;
            r.skip(formats * 2)?;
            for _ in 0..r.count()? {
                match r.i32()? {
                    -1 => {}
                    len if len >= 0 => r.skip(len as usize)?,
                    _ => return Err("a parameter length below -1"),
                }
            }
            let results = r.count()?;
            r.skip(results * 2)?;
        }
        b'E' => {
            r.cstr()?;
            r.i32()?;
        }
        b'D' | b'C' => {
            if !matches!(r.take(1)?, [b'S' | b'P']) {
                return Err("the target is neither 'S' (statement) nor 'P' (portal)");
            }
            r.cstr()?;
        }
        _ => return Ok(()),
    }
    if r.0.is_empty() {
        Ok(())
    } else {
        Err("trailing bytes after the message")
    }
}

/// A cursor over a message body for [`check_layout`].
struct LayoutReader<'a>(&'a [u8]);

impl<'a> LayoutReader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("the body ends early");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn skip(&mut self, n: usize) -> Result<(), &'static str> {
        self.take(n).map(drop)
    }

    fn cstr(&mut self) -> Result<(), &'static str> {
        let end = self
            .0
            .iter()
            .position(|b| *b == 0)
            .ok_or("a string without its terminating NUL")?;
        self.skip(end + 1)
    }

    fn i32(&mut self) -> Result<i32, &'static str> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A 16-bit count, which the protocol defines as signed.
    fn count(&mut self) -> Result<usize, &'static str> {
        let b = self.take(2)?;
        usize::try_from(i16::from_be_bytes([b[0], b[1]])).map_err(|_| "a negative count")
    }
}

/// Reads one tagged frame. `limit` bounds the whole frame, so a client cannot
/// make the gateway allocate more than that for one message.
pub async fn read_frame<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    limit: usize,
) -> Result<Frame, FrameError> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if len < 4 {
        return Err(FrameError::BadLength(len));
    }
    let total = len as usize + 1;
    if total > limit {
        return Err(FrameError::TooLarge {
            tag: head[0] as char,
            len: total,
            limit,
        });
    }
    let mut bytes = BytesMut::with_capacity(total);
    bytes.put_slice(&head);
    bytes.resize(total, 0);
    r.read_exact(&mut bytes[5..]).await?;
    Ok(Frame { bytes })
}

/// Reads one untagged startup-phase frame (length, then body); returns the
/// body after the length.
pub async fn read_startup<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    limit: usize,
) -> Result<Bytes, FrameError> {
    let mut head = [0u8; 4];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = i32::from_be_bytes(head);
    if len < 8 {
        return Err(FrameError::BadLength(len));
    }
    if len as usize > limit {
        return Err(FrameError::TooLarge {
            tag: '\0',
            len: len as usize,
            limit,
        });
    }
    let mut body = vec![0u8; len as usize - 4];
    r.read_exact(&mut body).await?;
    Ok(Bytes::from(body))
}

/// Builds a frame from a tag and body.
pub fn message(tag: u8, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::with_capacity(body.len() + 5);
    b.put_u8(tag);
    b.put_i32(body.len() as i32 + 4);
    b.put_slice(body);
    b
}

/// An ErrorResponse (or NoticeResponse with tag `N`) with the usual fields.
pub fn error(severity: &str, code: &str, text: &str) -> BytesMut {
    let fields = vec![
        (b'S', severity.to_owned()),
        (b'V', severity.to_owned()),
        (b'C', code.to_owned()),
        (b'M', text.to_owned()),
    ];
    let mut b = BytesMut::new();
    ErrorResponse::new(fields)
        .encode(&mut b)
        .expect("error responses have no size limit");
    b
}

/// An ErrorResponse from Gatehouse itself: [`error`] with the kind of
/// refusal in the routine field (see [`super::refusal`]).
pub fn refusal(severity: &str, code: &str, kind: super::refusal::Refusal, text: &str) -> BytesMut {
    refusal_with(severity, code, kind, text, None)
}

/// [`refusal`] with a DETAIL.
pub fn refusal_with(
    severity: &str,
    code: &str,
    kind: super::refusal::Refusal,
    text: &str,
    detail: Option<&str>,
) -> BytesMut {
    let mut fields = vec![
        (b'S', severity.to_owned()),
        (b'V', severity.to_owned()),
        (b'C', code.to_owned()),
        (b'M', text.to_owned()),
    ];
    if let Some(detail) = detail {
        fields.push((b'D', detail.to_owned()));
    }
    fields.push((b'R', kind.routine().to_owned()));
    let mut b = BytesMut::new();
    ErrorResponse::new(fields)
        .encode(&mut b)
        .expect("error responses have no size limit");
    b
}

/// The NoticeResponse sent after a result Gatehouse masked (SQLSTATE
/// 01000, routine `gatehouse_masked`), so a program knows the values it
/// got are not the stored ones.
pub fn masked_notice(text: &str) -> BytesMut {
    let fields = vec![
        (b'S', "NOTICE".to_owned()),
        (b'V', "NOTICE".to_owned()),
        (b'C', "01000".to_owned()),
        (b'M', text.to_owned()),
        (b'R', super::refusal::MASKED.to_owned()),
    ];
    let mut b = BytesMut::new();
    pgwire::messages::response::NoticeResponse::new(fields)
        .encode(&mut b)
        .expect("notices have no size limit");
    b
}

/// The NoticeResponse a client gets while its statement is held for
/// approval (severity NOTICE, SQLSTATE 00000, routine `gatehouse_held`),
/// with `text` and `hint`: told without ending anything.
pub fn held_notice(text: &str, hint: &str) -> BytesMut {
    let fields = vec![
        (b'S', "NOTICE".to_owned()),
        (b'V', "NOTICE".to_owned()),
        (b'C', "00000".to_owned()),
        (b'M', text.to_owned()),
        (b'H', hint.to_owned()),
        (b'R', super::refusal::HELD.to_owned()),
    ];
    let mut b = BytesMut::new();
    pgwire::messages::response::NoticeResponse::new(fields)
        .encode(&mut b)
        .expect("notice responses have no size limit");
    b
}

/// ReadyForQuery with the given status byte (`I`, `T` or `E`).
pub fn ready(status: u8) -> BytesMut {
    let status = match status {
        b'T' => TransactionStatus::Transaction,
        b'E' => TransactionStatus::Error,
        _ => TransactionStatus::Idle,
    };
    let mut b = BytesMut::new();
    ReadyForQuery::new(status)
        .encode(&mut b)
        .expect("fixed size");
    b
}

/// Reads a NUL-terminated string from `buf`.
pub fn get_cstr(buf: &mut &[u8]) -> Option<String> {
    let end = buf.iter().position(|b| *b == 0)?;
    let s = String::from_utf8(buf[..end].to_vec()).ok()?;
    buf.advance(end + 1);
    Some(s)
}

/// The fields of an ErrorResponse or NoticeResponse body: (code, value).
pub fn error_fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    let mut buf = body;
    while let Some((&code, rest)) = buf.split_first() {
        if code == 0 {
            break;
        }
        buf = rest;
        match get_cstr(&mut buf) {
            Some(v) => out.push((code, v)),
            None => break,
        }
    }
    out
}

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDescription {
    /// The column's name as the client sees it.
    pub name: String,
    /// OID of the table the column comes from; 0 for an expression.
    pub table_oid: u32,
    /// Attribute number within that table; 0 for an expression.
    pub column: i16,
    /// The value's type OID.
    pub type_oid: u32,
    /// The type's size (negative for variable-length types).
    pub type_len: i16,
    /// The type modifier.
    pub type_mod: i32,
    /// 0 text, 1 binary.
    pub format: i16,
}

/// The columns of a RowDescription body, or `None` if it is malformed.
pub fn row_description(body: &[u8]) -> Option<Vec<FieldDescription>> {
    let mut buf = body;
    if buf.len() < 2 {
        return None;
    }
    let n = buf.get_i16();
    let mut out = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let name = get_cstr(&mut buf)?;
        if buf.len() < 18 {
            return None;
        }
        out.push(FieldDescription {
            name,
            table_oid: buf.get_u32(),
            column: buf.get_i16(),
            type_oid: buf.get_u32(),
            type_len: buf.get_i16(),
            type_mod: buf.get_i32(),
            format: buf.get_i16(),
        });
    }
    buf.is_empty().then_some(out)
}

/// The values of a DataRow body (`None` entries are SQL NULLs), or `None`
/// if it is malformed.
pub fn data_row_values(body: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let mut buf = body;
    if buf.len() < 2 {
        return None;
    }
    let n = buf.get_i16();
    let mut out = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        if buf.len() < 4 {
            return None;
        }
        let len = buf.get_i32();
        if len < 0 {
            out.push(None);
            continue;
        }
        let len = len as usize;
        if buf.len() < len {
            return None;
        }
        out.push(Some(&buf[..len]));
        buf = &buf[len..];
    }
    buf.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_row_descriptions_and_data_rows() {
        let mut t = BytesMut::new();
        t.put_i16(2);
        for (name, table, col, ty) in [("id", 16384u32, 1i16, 23u32), ("x", 0, 0, 25)] {
            t.put_slice(name.as_bytes());
            t.put_u8(0);
            t.put_u32(table);
            t.put_i16(col);
            t.put_u32(ty);
            t.put_i16(4);
            t.put_i32(-1);
            t.put_i16(0);
        }
        let cols = row_description(&t).unwrap();
        assert_eq!(cols.len(), 2);
        assert_eq!(
            (cols[0].table_oid, cols[0].column, cols[0].type_oid),
            (16384, 1, 23)
        );
        assert_eq!(cols[1].name, "x");
        assert!(row_description(&t[..t.len() - 1]).is_none());
        let mut d = BytesMut::new();
        d.put_i16(2);
        d.put_i32(2);
        d.put_slice(b"42");
        d.put_i32(-1);
        assert_eq!(data_row_values(&d).unwrap(), vec![Some(&b"42"[..]), None]);
        assert!(data_row_values(&d[..5]).is_none());
        d.put_u8(0);
        assert!(data_row_values(&d).is_none(), "trailing bytes");
    }

    #[tokio::test]
    async fn reads_frames_and_refuses_oversized_ones() {
        let mut input: &[u8] = &[b'Q', 0, 0, 0, 8, b'S', b'E', b'L', 0, b'X', 0, 0, 0, 4];
        let f = read_frame(&mut input, 100).await.unwrap();
        assert_eq!((f.tag(), f.body()), (b'Q', &b"SEL\0"[..]));
        let f = read_frame(&mut input, 100).await.unwrap();
        assert_eq!(f.tag(), b'X');
        assert!(matches!(
            read_frame(&mut input, 100).await,
            Err(FrameError::Closed)
        ));
        let mut big: &[u8] = &[b'Q', 0, 0, 4, 0];
        assert!(matches!(
            read_frame(&mut big, 100).await,
            Err(FrameError::TooLarge { .. })
        ));
        let mut neg: &[u8] = &[b'Q', 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut neg, 100).await,
            Err(FrameError::BadLength(_))
        ));
    }

    #[test]
    fn error_fields_round_trip() {
        let e = error("ERROR", "42501", "no");
        let fields = error_fields(&e[5..]);
        assert!(fields.contains(&(b'C', "42501".into())));
        assert!(fields.contains(&(b'M', "no".into())));
    }

    /// Decodes `M` from a frame, reporting a panic instead of containing it.
    fn decode_uncontained<M: Message>(f: &Frame) -> Result<(), String> {
        let mut buf = f.bytes.clone();
        let ctx = DecodeContext::new(ProtocolVersion::default());
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = M::decode(&mut buf, &ctx);
        }))
        .map_err(|_| format!("pgwire panicked on {:?}", f.bytes))
    }

    proptest! {
        // Random parts rarely make a valid layout: about one in seventy does.
        #![proptest_config(ProptestConfig { max_global_rejects: 200_000, ..ProptestConfig::default() })]

        /// A body that passes the layout check never makes pgwire's decoder
        /// panic, so `decode` never relies on containing one.
        #[test]
        fn checked_layouts_never_panic_pgwire(
            tag in proptest::sample::select(&b"QPBEDC"[..]),
            parts in proptest::collection::vec(prop_oneof![
                Just(vec![0u8]),
                Just(b"S".to_vec()),
                "[a-z]{1,3}".prop_map(String::into_bytes),
                (-3i16..4).prop_map(|n| n.to_be_bytes().to_vec()),
                (-3i32..6).prop_map(|n| n.to_be_bytes().to_vec()),
                proptest::collection::vec(any::<u8>(), 1..4),
            ], 0..12),
        ) {
            use pgwire::messages::extendedquery::{Bind, Close, Describe, Execute, Parse};
            use pgwire::messages::simplequery::Query;
            let body = parts.concat();
            prop_assume!(check_layout(tag, &body).is_ok());
            let f = Frame { bytes: message(tag, &body) };
            let r = match tag {
                b'Q' => decode_uncontained::<Query>(&f),
                b'P' => decode_uncontained::<Parse>(&f),
                b'B' => decode_uncontained::<Bind>(&f),
                b'E' => decode_uncontained::<Execute>(&f),
                b'D' => decode_uncontained::<Describe>(&f),
                _ => decode_uncontained::<Close>(&f),
            };
            prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        }

        /// Every message pgwire itself encodes passes the layout check and decodes.
        #[test]
        fn well_formed_messages_pass_the_layout_check(
            name in "[a-z]{0,4}",
            sql in "[ -~]{0,24}",
            types in proptest::collection::vec(any::<u32>(), 0..4),
            formats in proptest::collection::vec(0i16..2, 0..4),
            params in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..6)), 0..4),
            max_rows in any::<i32>(),
        ) {
            use pgwire::messages::extendedquery::{Bind, Execute, Parse};
            use pgwire::messages::simplequery::Query;
            fn encoded<M: Message>(m: &M) -> Frame {
                let mut bytes = BytesMut::new();
                m.encode(&mut bytes).unwrap();
                Frame { bytes }
            }
            let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
            let frames = [
                (encoded(&Query::new(sql.clone())), "Query"),
                (encoded(&Parse::new(opt(&name), sql.clone(), types.clone())), "Parse"),
                (encoded(&Bind::new(opt(&name), opt(&name), formats.clone(), params.iter().map(|p| p.clone().map(Bytes::from)).collect(), formats.clone())), "Bind"),
                (encoded(&Execute::new(opt(&name), max_rows)), "Execute"),
            ];
            for (f, what) in &frames {
                prop_assert_eq!(check_layout(f.tag(), f.body()), Ok(()), "{}", what);
            }
            prop_assert!(frames[0].0.decode::<Query>("Query").is_ok());
            prop_assert!(frames[1].0.decode::<Parse>("Parse").is_ok());
            prop_assert!(frames[2].0.decode::<Bind>("Bind").is_ok());
            prop_assert!(frames[3].0.decode::<Execute>("Execute").is_ok());
        }

        /// Well-framed messages with arbitrary bodies never panic the decoders.
        #[test]
        fn arbitrary_bodies_never_panic(tag in proptest::sample::select(&b"QPBECDS"[..]), body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let f = Frame { bytes: message(tag, &body) };
            let _ = f.decode::<pgwire::messages::simplequery::Query>("Query");
            let _ = f.decode::<pgwire::messages::extendedquery::Parse>("Parse");
            let _ = f.decode::<pgwire::messages::extendedquery::Bind>("Bind");
            let _ = f.decode::<pgwire::messages::extendedquery::Execute>("Execute");
            let _ = f.decode::<pgwire::messages::extendedquery::Close>("Close");
        }

        /// Arbitrary client bytes never panic the frame reader or the decoders.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300), limit in 5usize..400) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let mut input: &[u8] = &data;
                while let Ok(f) = read_frame(&mut input, limit).await {
                    let _ = f.decode::<pgwire::messages::simplequery::Query>("Query");
                    let _ = f.decode::<pgwire::messages::extendedquery::Parse>("Parse");
                    let _ = f.decode::<pgwire::messages::extendedquery::Bind>("Bind");
                    let _ = f.decode::<pgwire::messages::extendedquery::Execute>("Execute");
                    let _ = error_fields(f.body());
                }
                let mut input: &[u8] = &data;
                let _ = read_startup(&mut input, limit).await;
            });
        }
    }
}
