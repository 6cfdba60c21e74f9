//! Failpoints for crash tests: `RIPOSTE_FAILPOINT=<name>[@<n>]` aborts the process (as
//! `kill -9` would: no destructor, no flush, no acknowledgement) the `n`-th time (default
//! the first) the point `name` is reached. The tests use it to crash at the one moment that
//! luck rarely hits, such as between an event's commit and the broker's acknowledgement.
//!
//! Unset, as in production, a point costs one atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The armed point, read from the environment once.
struct Armed {
    name: String,
    at: u64,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("RIPOSTE_FAILPOINT").ok()?;
            let (name, at) = parse(&spec)?;
            Some(Armed {
                name,
                at,
                hits: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// `name` or `name@n` (n ≥ 1); anything else arms nothing.
fn parse(spec: &str) -> Option<(String, u64)> {
    let spec = spec.trim();
    let (name, at) = match spec.rsplit_once('@') {
        Some((name, n)) => (name, n.parse().ok().filter(|n| *n >= 1)?),
        None => (spec, 1),
    };
    (!name.is_empty()).then(|| (name.to_string(), at))
}

/// Marks that the point `name` is reached; aborts the process if it is the armed one and
/// this is its `n`-th hit. `name` is built only when some point is armed.
pub fn reached(name: impl FnOnce() -> String) {
    let Some(armed) = armed() else {
        return;
    };
    if name() != armed.name {
        return;
    }
    if armed.hits.fetch_add(1, Ordering::SeqCst) + 1 == armed.at {
        eprintln!("failpoint {} reached: aborting", armed.name);
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn specs_name_a_point_and_its_hit() {
        let table = [
            (
                "source.mqtt.after-commit",
                Some(("source.mqtt.after-commit", 1)),
            ),
            (
                "source.amqp.after-commit@3",
                Some(("source.amqp.after-commit", 3)),
            ),
            ("x@0", None),
            ("x@many", None),
            ("", None),
            ("@2", None),
        ];
        for (spec, want) in table {
            assert_eq!(
                parse(spec),
                want.map(|(n, a)| (n.to_string(), a)),
                "{spec:?}"
            );
        }
    }
}
