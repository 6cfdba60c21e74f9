//! Argo's closed vocabularies (retry policy, cron concurrency policy, resource action and
//! merge strategy) as enums, parsed once from the text of a resource. The resource types keep
//! the text, so lint can name a wrong value with its position; code that acts on a value
//! parses it here and matches on the enum.

/// `retryStrategy.retryPolicy`: which failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    Always,
    /// The default.
    OnFailure,
    OnError,
    OnTransientError,
}

impl RetryPolicy {
    pub const ALL: &'static str = "Always, OnFailure, OnError or OnTransientError";

    pub fn parse(s: &str) -> Option<RetryPolicy> {
        Some(match s {
            "Always" => RetryPolicy::Always,
            "OnFailure" => RetryPolicy::OnFailure,
            "OnError" => RetryPolicy::OnError,
            "OnTransientError" => RetryPolicy::OnTransientError,
            _ => return None,
        })
    }

    /// Whether a `Failed` node and an `Error` node are retried.
    pub fn retries(self) -> (bool, bool) {
        match self {
            RetryPolicy::Always => (true, true),
            RetryPolicy::OnError | RetryPolicy::OnTransientError => (false, true),
            RetryPolicy::OnFailure => (true, false),
        }
    }
}

/// `CronWorkflow.spec.concurrencyPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConcurrencyPolicy {
    /// The default: runs go alongside.
    #[default]
    Allow,
    /// Skip a firing while a previous run is unfinished.
    Forbid,
    /// Terminate unfinished runs, then start.
    Replace,
}

impl ConcurrencyPolicy {
    pub fn parse(s: Option<&str>) -> Option<ConcurrencyPolicy> {
        Some(match s {
            None | Some("Allow") => ConcurrencyPolicy::Allow,
            Some("Forbid") => ConcurrencyPolicy::Forbid,
            Some("Replace") => ConcurrencyPolicy::Replace,
            Some(_) => return None,
        })
    }
}

/// A resource template's `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceAction {
    Get,
    Create,
    Apply,
    Replace,
    Patch,
    Delete,
}

impl ResourceAction {
    pub const ALL: &'static str = "get, create, apply, replace, patch or delete";

    pub fn parse(s: &str) -> Option<ResourceAction> {
        Some(match s {
            "get" => ResourceAction::Get,
            "create" => ResourceAction::Create,
            "apply" => ResourceAction::Apply,
            "replace" => ResourceAction::Replace,
            "patch" => ResourceAction::Patch,
            "delete" => ResourceAction::Delete,
            _ => return None,
        })
    }
}

/// A resource template's `mergeStrategy` (for `patch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MergeStrategy {
    /// The default, like kubectl's.
    #[default]
    Strategic,
    Merge,
    Json,
}

impl MergeStrategy {
    pub const ALL: &'static str = "strategic, merge or json";

    pub fn parse(s: Option<&str>) -> Option<MergeStrategy> {
        Some(match s {
            None | Some("strategic") => MergeStrategy::Strategic,
            Some("merge") => MergeStrategy::Merge,
            Some("json") => MergeStrategy::Json,
            Some(_) => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabularies_parse_argos_words_and_nothing_else() {
        assert_eq!(
            RetryPolicy::parse("Always").map(RetryPolicy::retries),
            Some((true, true))
        );
        assert_eq!(
            RetryPolicy::parse("OnFailure").map(RetryPolicy::retries),
            Some((true, false))
        );
        assert_eq!(
            RetryPolicy::parse("OnTransientError").map(RetryPolicy::retries),
            Some((false, true))
        );
        assert_eq!(RetryPolicy::parse("always"), None);
        assert_eq!(
            ConcurrencyPolicy::parse(None),
            Some(ConcurrencyPolicy::Allow)
        );
        assert_eq!(
            ConcurrencyPolicy::parse(Some("Forbid")),
            Some(ConcurrencyPolicy::Forbid)
        );
        assert_eq!(ConcurrencyPolicy::parse(Some("Sometimes")), None);
        assert_eq!(ResourceAction::parse("apply"), Some(ResourceAction::Apply));
        assert_eq!(ResourceAction::parse("ptach"), None);
        assert_eq!(MergeStrategy::parse(None), Some(MergeStrategy::Strategic));
        assert_eq!(
            MergeStrategy::parse(Some("json")),
            Some(MergeStrategy::Json)
        );
        assert_eq!(MergeStrategy::parse(Some("yaml")), None);
    }
}
