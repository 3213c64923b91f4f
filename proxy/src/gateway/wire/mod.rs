//! The wire: PostgreSQL's frontend/backend protocol as bytes. Framing,
//! message bodies, the errors and notices the gateway writes itself, and
//! the byte streams they travel on. Imports nothing else of the gateway.

pub mod frame;
pub mod refusal;

use tokio::io::{AsyncRead, AsyncWrite};

/// Anything that is both a byte stream and sendable: TCP or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Whether a client may ask for this client encoding. The gateway judges SQL
/// as UTF-8 text, so the database must read the same bytes as UTF-8: every
/// upstream session starts with `client_encoding=UTF8`, and changing it
/// later is denied by policy whatever the rules say. `SQL_ASCII` is what
/// libpq asks for under the C locale; such a client gets UTF8, which passes
/// its bytes through unconverted too. Names compare as PostgreSQL compares
/// them: ignoring case and anything but letters and digits.
pub fn utf8_encoding(name: &str) -> bool {
    let name: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    matches!(name.as_str(), "UTF8" | "UNICODE" | "SQLASCII")
}

/// Fresh random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).expect("the OS random source is available");
    b
}
