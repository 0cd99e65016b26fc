//! Randomness from the operating system for [`latchkey::Engine::start`].

use latchkey::ENTROPY_LEN;

/// Fills the entropy a flow starts from (its PKCE verifier and `state`, S1, S2) from the
/// operating system's random source.
///
/// # Errors
///
/// The OS error if its random source fails. That practically never happens on a running
/// system, but a failure must not become a panic inside a service, nor be papered over with
/// weaker randomness: the caller refuses to start the flow.
pub fn entropy() -> std::io::Result<[u8; ENTROPY_LEN]> {
    let mut bytes = [0; ENTROPY_LEN];
    getrandom::fill(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::entropy;

    #[test]
    fn two_draws_differ_and_are_not_all_zero() {
        let first = entropy().expect("OS randomness");
        let second = entropy().expect("OS randomness");
        assert_ne!(first, second);
        assert_ne!(first, [0; latchkey::ENTROPY_LEN]);
    }
}
