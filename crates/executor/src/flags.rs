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
                // Accepted and without effect here: the API server validates, deletes of
                // missing objects are already ignored, apply is always server-side and
                // always forces conflicts.
                "--validate" | "--ignore-not-found" | "--server-side" | "--force-conflicts"
                | "--wait" => {}
                k if k.starts_with('-') => {
                    return Err(format!(
                        "flag {k} is not supported by Riposte's resource template; supported: --namespace/-n, --selector/-l, --field-manager, --force-conflicts, --validate, --ignore-not-found, --server-side, and TYPE NAME"
                    ));
                }
                positional => f.target.push(positional.to_string()),
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
