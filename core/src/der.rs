//! Just enough DER (ITU-T X.690) for private key files: read a definite-length element,
//! write one. Only what [`crate::keys`] needs; every length is checked, nothing panics.

/// SEQUENCE.
pub(crate) const SEQUENCE: u8 = 0x30;
/// INTEGER.
pub(crate) const INTEGER: u8 = 0x02;
/// OCTET STRING.
pub(crate) const OCTET_STRING: u8 = 0x04;
/// BIT STRING.
pub(crate) const BIT_STRING: u8 = 0x03;
/// OBJECT IDENTIFIER.
pub(crate) const OID: u8 = 0x06;
/// NULL.
pub(crate) const NULL: u8 = 0x05;
/// `[0]`, constructed (EC parameters in an `ECPrivateKey`).
pub(crate) const CONTEXT_0: u8 = 0xa0;
/// `[1]`, constructed (the public key in an `ECPrivateKey`).
pub(crate) const CONTEXT_1: u8 = 0xa1;

/// Reads the element at the start of `input`: its tag, its contents and what follows.
/// `None` for a truncated element, an indefinite or non-minimal length, or a length of
/// more than four bytes.
pub(crate) fn read(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = match first {
        0..=0x7f => usize::from(first),
        0x81..=0x84 => {
            let count = usize::from(first & 0x7f);
            let (bytes, after) = rest.split_at_checked(count)?;
            // Minimal: no leading zero byte, and the long form only from 128 on.
            if bytes[0] == 0 || (count == 1 && bytes[0] < 0x80) {
                return None;
            }
            rest = after;
            bytes
                .iter()
                .fold(0usize, |len, byte| len << 8 | usize::from(*byte))
        }
        _ => return None,
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// Reads an element that must have `tag`.
pub(crate) fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match read(input)? {
        (found, contents, rest) if found == tag => Some((contents, rest)),
        _ => None,
    }
}

/// The value of a small non-negative INTEGER (a version number).
pub(crate) fn small_integer(contents: &[u8]) -> Option<u8> {
    match contents {
        [value] if *value < 0x80 => Some(*value),
        _ => None,
    }
}

/// The magnitude of a non-negative INTEGER, without its leading zero bytes.
pub(crate) fn unsigned(contents: &[u8]) -> Option<&[u8]> {
    if contents.first().is_none_or(|first| first & 0x80 != 0) {
        return None;
    }
    let zeros = contents.iter().take_while(|byte| **byte == 0).count();
    Some(&contents[zeros..])
}

/// Appends an element with `tag` and `contents`.
pub(crate) fn write(out: &mut Vec<u8>, tag: u8, contents: &[u8]) {
    out.push(tag);
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|byte| **byte == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
}

/// An element with `tag` and `contents`, as a new buffer.
pub(crate) fn element(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(contents.len() + 6);
    write(&mut out, tag, contents);
    out
}

/// Appends a non-negative INTEGER of magnitude `magnitude` (big-endian): leading zeros
/// dropped, one zero byte added where the top bit is set.
pub(crate) fn write_unsigned(out: &mut Vec<u8>, magnitude: &[u8]) {
    let zeros = magnitude.iter().take_while(|byte| **byte == 0).count();
    let magnitude = &magnitude[zeros..];
    let mut contents = Vec::with_capacity(magnitude.len() + 1);
    if magnitude.first().is_none_or(|first| first & 0x80 != 0) {
        contents.push(0);
    }
    contents.extend_from_slice(magnitude);
    write(out, INTEGER, &contents);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_read_and_written_in_their_shortest_form() {
        for len in [0usize, 1, 127, 128, 255, 256, 65_535, 65_536] {
            let contents = vec![7u8; len];
            let bytes = element(OCTET_STRING, &contents);
            let (tag, read_back, rest) = read(&bytes).unwrap();
            assert_eq!(
                (tag, read_back, rest),
                (OCTET_STRING, &contents[..], &[][..])
            );
        }
        assert_eq!(element(NULL, &[]), [0x05, 0x00]);
        assert_eq!(element(OCTET_STRING, &[0; 200])[..3], [0x04, 0x81, 200]);
    }

    #[test]
    fn malformed_elements_are_refused() {
        for bytes in [
            &[][..],
            &[0x30],
            &[0x30, 0x02, 0x01],                // shorter than its length
            &[0x30, 0x80, 0x00, 0x00],          // indefinite length
            &[0x30, 0x81, 0x05, 0, 0, 0, 0, 0], // long form under 128
            &[0x30, 0x82, 0x00, 0x81],          // leading zero in the length
            &[0x30, 0x85, 1, 0, 0, 0, 0],       // five length bytes
        ] {
            assert_eq!(read(bytes), None, "{bytes:02x?}");
        }
    }

    #[test]
    fn integers_are_unsigned_and_minimal() {
        let mut out = Vec::new();
        write_unsigned(&mut out, &[0, 0, 0x80, 1]);
        assert_eq!(out, [0x02, 0x03, 0x00, 0x80, 0x01]);
        let (contents, _) = expect(&out, INTEGER).unwrap();
        assert_eq!(unsigned(contents), Some(&[0x80, 0x01][..]));
        assert_eq!(unsigned(&[0xff]), None, "negative");
        assert_eq!(unsigned(&[]), None);
        assert_eq!(small_integer(&[1]), Some(1));
        assert_eq!(small_integer(&[0, 1]), None);
    }
}
