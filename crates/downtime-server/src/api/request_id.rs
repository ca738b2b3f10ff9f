//! Request ids in the format of the `xid` library Toxiproxy uses: 12 bytes (seconds, random,
//! counter) written as 20 lowercase base32hex characters.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngExt;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A new 20-character id, unique within the process and roughly time-ordered.
pub fn next() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut raw = [0u8; 12];
    raw[..4].copy_from_slice(&(secs as u32).to_be_bytes());
    let random: [u8; 5] = rand::rng().random();
    raw[4..9].copy_from_slice(&random);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    raw[9..].copy_from_slice(&count[1..]);
    encode(&raw)
}

/// Base32hex without padding: 96 bits in 20 characters, the last one carrying 1 bit.
fn encode(raw: &[u8; 12]) -> String {
    let mut out = String::with_capacity(20);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &byte in raw {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_twenty_base32hex_characters_and_distinct() {
        let a = super::next();
        let b = super::next();
        assert_eq!(a.len(), 20);
        assert!(a.bytes().all(|c| super::ALPHABET.contains(&c)));
        assert_ne!(a, b);
    }
}
