//! A resource template's `flags`: the subset of `kubectl` flags Riposte understands (pure,
//! shared by the Kubernetes executor and lint).

/// The resource template's `flags`, the subset of `kubectl` flags Riposte understands.
#[derive(Debug, Default, PartialEq)]
pub struct Flags {
    /// `TYPE NAME` positional arguments (`[pod, my-pod]`), naming the target.
    pub target: Vec<String>,
    pub namespace: Option<String>,
    pub selector: Option<String>,
    pub field_manager: Option<String>,
    /// `--dry-run=server|client|true` (kubectl's values, plus `true`/`false` so a template
    /// can pass a `dryRun` parameter straight through): the API server validates and answers
    /// with the object it would store, and nothing changes.
    pub dry_run: bool,
    /// `--grace-period=SECONDS` for `delete` (kubectl's; negative means the object's own).
    pub grace_period: Option<u32>,
}

/// The value of `--dry-run[=VALUE]`: kubectl's `server`, `client` and `none`, plus `true` and
/// `false` so that a `dryRun` parameter passes straight through. A bare `--dry-run` means yes
/// (kubectl's old client dry run).
pub fn dry_run(value: Option<&str>) -> Result<bool, String> {
    match value.map(str::trim) {
        None => Ok(true),
        Some("server" | "client" | "true" | "True" | "yes") => Ok(true),
        Some("none" | "false" | "False" | "no" | "") => Ok(false),
        Some(other) => Err(format!(
            "--dry-run={other:?}: expected server, client, none, true or false"
        )),
    }
}

impl Flags {
    pub fn parse(flags: &[String]) -> Result<Flags, String> {
        let mut f = Flags::default();
        let mut it = flags.iter().map(|s| s.trim());
        while let Some(flag) = it.next() {
            let (key, inline) = match flag.split_once('=') {
                Some((k, v)) if k.starts_with('-') => (k, Some(v.to_string())),
                _ => (flag, None),
            };
            let mut value = |what: &str| -> Result<String, String> {
                match &inline {
                    Some(v) => Ok(v.clone()),
                    None => it
                        .next()
                        .map(str::to_string)
                        .ok_or_else(|| format!("flag {key} needs {what}")),
                }
            };
            match key {
                "-n" | "--namespace" => f.namespace = Some(value("a namespace")?),
                "-l" | "--selector" => f.selector = Some(value("a label selector")?),
                "--field-manager" => f.field_manager = Some(value("a name")?),
                "--grace-period" => {
                    let v = value("a number of seconds")?;
                    let n: i64 = v.trim().parse().map_err(|_| {
                        format!("--grace-period={v:?}: expected a whole number of seconds")
                    })?;
                    f.grace_period = u32::try_from(n).ok();
                }
                "--dry-run" => f.dry_run = dry_run(inline.as_deref())?,
                // Accepted and without effect here: the API server validates, deletes of
                // missing objects are already ignored, apply is always server-side and
                // always forces conflicts.
                "--validate" | "--ignore-not-found" | "--server-side" | "--force-conflicts"
                | "--wait" => {}
                k if k.starts_with('-') => {
                    return Err(format!(
                        "flag {k} is not supported by Riposte's resource template; supported: --namespace/-n, --selector/-l, --field-manager, --dry-run=server|none, --grace-period, --force-conflicts, --validate, --ignore-not-found, --server-side, and TYPE NAME"
                    ));
                }
                // kubectl's `TYPE/NAME` form.
                positional => match positional.split_once('/') {
                    Some((t, n)) if f.target.is_empty() && !t.is_empty() && !n.is_empty() => {
                        f.target.push(t.to_string());
                        f.target.push(n.to_string());
                    }
                    _ => f.target.push(positional.to_string()),
                },
            }
        }
        if f.target.len() > 2 {
            return Err(format!(
                "flags name more than TYPE and NAME: {:?}",
                f.target
            ));
        }
        Ok(f)
    }
}
