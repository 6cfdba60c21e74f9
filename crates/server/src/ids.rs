//! Names and ids for new workflows: random where Kubernetes would pick them. Randomness comes
//! from the operating system (`getrandom`); there is no fallback to the clock: without a
//! source of randomness ids and tokens would be guessable, so that is an error.

/// `N` random bytes from the OS. Panics (an unrecoverable environment fault, reported by the
/// driver's panic guard or at start) only when the OS has no randomness to give.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if let Err(e) = getrandom::fill(&mut buf) {
        panic!("the operating system gave no random bytes ({e}); refusing to make guessable ids");
    }
    buf
}

/// The 5-character suffix of `generateName`, from Kubernetes' alphabet.
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    // Rejection sampling keeps every character equally likely.
    let mut out = String::with_capacity(5);
    while out.len() < 5 {
        for b in random_bytes::<8>() {
            let limit = (256 / ALPHABET.len() * ALPHABET.len()) as u8;
            if b < limit && out.len() < 5 {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    out
}

/// A random (version 4) UUID.
pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let s = name_suffix();
        assert_eq!(s.len(), 5);
        assert!(s.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(new_uid(), u);
    }
}
