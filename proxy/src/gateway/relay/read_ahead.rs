//! A client reader that can read ahead of the message being handled and
//! give those bytes back later.
//!
//! While a statement is held for approval, the relay must notice the
//! client leaving (its connection closing, or a Terminate) even when the
//! client has pipelined further messages behind the held one, which a
//! plain buffered reader would leave unread in front of the end of the
//! stream. [`ReadAhead::read_ahead`] pulls those bytes into a side buffer,
//! and reads resume from it, so nothing the client sent is lost or
//! reordered.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, ReadBuf};

/// Most bytes read ahead; past it, reading ahead stops (the client's
/// further messages wait in the socket) until the relay catches up.
pub const READ_AHEAD_LIMIT: usize = 1 << 20;

/// What reading ahead found.
#[derive(Debug, PartialEq, Eq)]
pub enum Ahead {
    /// More bytes arrived (and are kept).
    More,
    /// The client sent Terminate, or closed its connection.
    Gone,
    /// The read-ahead buffer is full: nothing more is read until the relay
    /// consumes it.
    Full,
}

/// A buffered reader with a read-ahead buffer in front of it.
pub struct ReadAhead<R> {
    front: BytesMut,
    /// Bytes of `front` already scanned for a Terminate: the start of the
    /// first message not yet complete.
    scanned: usize,
    inner: R,
}

impl<R: AsyncBufRead + Unpin> ReadAhead<R> {
    /// Reads from `inner`, with nothing read ahead yet.
    pub fn new(inner: R) -> ReadAhead<R> {
        ReadAhead {
            front: BytesMut::new(),
            scanned: 0,
            inner,
        }
    }

    /// Reads whatever the client sends next into the read-ahead buffer,
    /// and says whether the client has gone. Reads start at a message
    /// boundary (the relay calls this between messages).
    pub async fn read_ahead(&mut self) -> Ahead {
        if self.front.len() >= READ_AHEAD_LIMIT {
            return Ahead::Full;
        }
        let chunk = match self.inner.fill_buf().await {
            Ok([]) | Err(_) => return Ahead::Gone,
            Ok(chunk) => chunk,
        };
        let n = chunk.len();
        self.front.extend_from_slice(chunk);
        self.inner.consume(n);
        if self.terminated() {
            Ahead::Gone
        } else {
            Ahead::More
        }
    }

    /// Whether a complete Terminate message is among the bytes read ahead.
    fn terminated(&mut self) -> bool {
        // The first read-ahead byte follows a whole message (the held one),
        // so `front` is a sequence of messages.
        while self.front.len() >= self.scanned + 5 {
            let at = &self.front[self.scanned..];
            if at[0] == b'X' {
                return true;
            }
            let len = i32::from_be_bytes([at[1], at[2], at[3], at[4]]);
            let Ok(len) = usize::try_from(len) else {
                return false;
            };
            if len < 4 || at.len() < len + 1 {
                return false;
            }
            self.scanned += len + 1;
        }
        false
    }

    fn consume_front(&mut self, n: usize) {
        self.front.advance(n);
        self.scanned = self.scanned.saturating_sub(n);
    }
}

impl<R: AsyncBufRead + Unpin> AsyncRead for ReadAhead<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.front.is_empty() {
            let n = this.front.len().min(buf.remaining());
            buf.put_slice(&this.front[..n]);
            this.consume_front(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<R: AsyncBufRead + Unpin> AsyncBufRead for ReadAhead<R> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<&[u8]>> {
        let this = self.get_mut();
        if !this.front.is_empty() {
            return Poll::Ready(Ok(&this.front));
        }
        Pin::new(&mut this.inner).poll_fill_buf(cx)
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        if this.front.is_empty() {
            Pin::new(&mut this.inner).consume(amt);
        } else {
            this.consume_front(amt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[tokio::test]
    async fn bytes_read_ahead_are_read_again_in_order() {
        let mut sent = message(b'S', b"");
        sent.extend(message(b'Q', b"SELECT 1\0"));
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut r = ReadAhead::new(tokio::io::BufReader::new(rx));
        tokio::io::AsyncWriteExt::write_all(&mut tx, &sent)
            .await
            .unwrap();
        assert_eq!(r.read_ahead().await, Ahead::More);
        drop(tx);
        assert_eq!(r.read_ahead().await, Ahead::Gone);
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, sent);
    }

    #[tokio::test]
    async fn a_terminate_behind_pipelined_messages_means_gone() {
        let mut sent = message(b'S', b"");
        sent.extend(message(b'Q', b"SELECT 'X'\0"));
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut r = ReadAhead::new(tokio::io::BufReader::new(rx));
        // Sent in pieces, split inside a message.
        tokio::io::AsyncWriteExt::write_all(&mut tx, &sent[..7])
            .await
            .unwrap();
        assert_eq!(r.read_ahead().await, Ahead::More);
        tokio::io::AsyncWriteExt::write_all(&mut tx, &sent[7..])
            .await
            .unwrap();
        assert_eq!(
            r.read_ahead().await,
            Ahead::More,
            "an X in a body is not a Terminate"
        );
        tokio::io::AsyncWriteExt::write_all(&mut tx, &message(b'X', b""))
            .await
            .unwrap();
        assert_eq!(r.read_ahead().await, Ahead::Gone);
    }
}
