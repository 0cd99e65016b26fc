//! The character classes of RFC 6749 Appendix A, shared by everything that checks values
//! from configuration, callbacks and token responses.

/// VSCHAR: %x20-7E. Non-empty: client ids, codes, tokens (safe inside a header value).
pub fn is_vschar_text(value: &str) -> bool {
    !value.is_empty() && all_bytes(value.as_bytes(), |b| matches!(b, 0x20..=0x7e))
}

/// Whether every byte passes `test`, a block at a time: a check without an early exit
/// inside each block compiles to vector instructions, which matters for kilobyte-long
/// tokens.
pub fn all_bytes(bytes: &[u8], test: impl Fn(u8) -> bool) -> bool {
    let mut blocks = bytes.chunks_exact(32);
    blocks.all(|block| block.iter().fold(true, |all, &b| all & test(b)))
        && blocks.remainder().iter().all(|&b| test(b))
}

/// `error` (A.7, A.2 of §5.2): 1*NQSCHAR, NQSCHAR = %x20-21 / %x23-5B / %x5D-7E.
pub fn is_error_code(code: &str) -> bool {
    !code.is_empty()
        && code
            .bytes()
            .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5b | 0x5d..=0x7e))
}

/// `scope-token` (A.4): 1*NQCHAR, NQCHAR = %x21 / %x23-5B / %x5D-7E.
pub fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_rfc6749_appendix_a() {
        assert!(is_vschar_text("a b~"));
        assert!(!is_vschar_text("") && !is_vschar_text("a\nb") && !is_vschar_text("é"));
        assert!(is_error_code("access_denied") && is_error_code("a b"));
        assert!(!is_error_code("a\"b") && !is_error_code("a\\b") && !is_error_code(""));
        assert!(
            is_scope_token("api://x/read") && !is_scope_token("a b") && !is_scope_token("a\"b")
        );
    }
}
