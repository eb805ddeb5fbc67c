//! GPT-2 byte-level mapping: every byte is shown as a printable Unicode character so that BPE
//! vocabularies can be stored as text (`Ġ` = space, `Ċ` = newline, ...).

use std::sync::OnceLock;

/// The 256-entry table byte → char (GPT-2's `bytes_to_unicode`).
fn table() -> &'static [char; 256] {
    static TABLE: OnceLock<[char; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = ['\0'; 256];
        let mut n = 0u32;
        for b in 0..256u32 {
            let printable = (0x21..=0x7E).contains(&b)
                || (0xA1..=0xAC).contains(&b)
                || (0xAE..=0xFF).contains(&b);
            t[b as usize] = if printable {
                char::from_u32(b).expect("latin-1 range")
            } else {
                let c = char::from_u32(256 + n).expect("small code point");
                n += 1;
                c
            };
        }
        t
    })
}

/// The character that stands for `byte`.
pub fn byte_to_char(byte: u8) -> char {
    table()[byte as usize]
}

/// The byte a byte-level character stands for, if it is one.
pub fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    // The table's characters are U+0021..U+00FF (minus a few) and U+0100..U+0143.
    static REVERSE: OnceLock<[Option<u8>; 0x144]> = OnceLock::new();
    let rev = REVERSE.get_or_init(|| {
        let mut r = [None; 0x144];
        for (b, &c) in table().iter().enumerate() {
            r[c as usize] = Some(b as u8);
        }
        r
    });
    rev.get(cp as usize).copied().flatten()
}

/// Encodes raw bytes as byte-level text.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| byte_to_char(b)).collect()
}

/// Decodes byte-level text back to bytes; characters outside the table are kept as their
/// UTF-8 bytes (llama.cpp would print a marker; keeping the text is more useful).
pub fn decode_into(text: &str, out: &mut Vec<u8>) {
    for c in text.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_characters() {
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'a'), 'a');
        assert_eq!(byte_to_char(0xAD), 'Ń');
        assert_eq!(encode("hé".as_bytes()), "hÃ©");
    }

    #[test]
    fn all_bytes_round_trip_and_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = byte_to_char(b);
            assert!(seen.insert(c));
            assert_eq!(char_to_byte(c), Some(b));
        }
        let mut out = Vec::new();
        decode_into(&encode(&[0, 10, 32, 200, 255]), &mut out);
        assert_eq!(out, vec![0, 10, 32, 200, 255]);
        assert_eq!(char_to_byte('€'), None);
    }
}
