//! Argo Events `Sensor`s, typed and compiled once per stored version.
//!
//! [`compile`] reads a Sensor's JSON into typed structs that spell Argo's field names (an
//! unknown field is a warning naming it, a wrong type an error at its path), then compiles
//! what the sensor core runs for every event: filter regexes, govaluate and expr-lang
//! expressions, jq programs, checked Lua scripts, Go templates, gjson paths and trigger
//! conditions. Its [`Problem`]s are what `riposte lint` prints (with `file:line:col` from the
//! document) and what the API refuses a sensor for, so lint *is* compilation. Argo's
//! defaults and int-or-string quirks live here and nowhere else.

use serde::Deserialize;
use serde_json::Value;

use crate::Severity;

/// Trigger types Riposte carries out; others are warnings.
pub const TRIGGER_TYPES: &[&str] = &["argoWorkflow", "k8s", "http", "log"];

/// One problem found compiling a sensor, at a path of its document
/// (`spec.dependencies[0].filters.data[1].path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub severity: Severity,
    pub message: String,
}

/// A sensor that does not compile: its errors, in document order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name:?} does not compile: {}", errors.iter().map(|p| format!("{}: {}", p.path, p.message)).collect::<Vec<_>>().join("; "))]
pub struct CompileError {
    /// `sensor`, `WorkflowEventBinding`, …
    pub kind: &'static str,
    pub name: String,
    pub errors: Vec<Problem>,
}

/// A compiled sensor: everything the core needs per event, parsed once.
#[derive(Debug, Clone)]
pub struct CompiledSensor {
    /// `metadata.namespace` (empty when the document has none; the server sets it).
    pub namespace: String,
    pub name: String,
    pub dependencies: Vec<Dependency>,
    pub triggers: Vec<Trigger>,
}

impl CompiledSensor {
    /// `namespace/name`, the key its decisions and waiting state are stored under.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn dependency_names(&self) -> Vec<String> {
        self.dependencies.iter().map(|d| d.name.clone()).collect()
    }

    /// Whether some dependency takes events of this source and name.
    pub fn listens_to(&self, event_source: &str, event_name: &str) -> bool {
        self.dependencies
            .iter()
            .any(|d| d.event_source_name == event_source && d.event_name == event_name)
    }

    /// Whether some trigger needs events of more than one dependency at once (then the
    /// events it waits with are state, kept between events).
    pub fn is_stateful(&self) -> bool {
        self.dependencies.len() > 1
            && self.triggers.iter().any(|t| match &t.conditions {
                None => true,
                Some(c) => c.needs_several(),
            })
    }

    pub fn trigger(&self, name: &str) -> Option<&Trigger> {
        self.triggers.iter().find(|t| t.name == name)
    }
}

/// A dependency: the events of one source and name that pass its filters.
#[derive(Debug, Clone)]
pub struct Dependency {
    pub name: String,
    pub event_source_name: String,
    pub event_name: String,
    /// `None`: no `filters`, every event matches.
    pub filters: Option<Filters>,
    /// `filtersLogicalOperator: or`.
    pub filters_any: bool,
    pub transform: Option<Transform>,
}

#[derive(Debug, Clone)]
pub enum Transform {
    Jq(expr::jq::Program),
    Lua(expr::lua::Script),
}

#[derive(Debug, Clone)]
pub struct Filters {
    pub data: Vec<DataFilter>,
    pub data_any: bool,
    pub exprs: Vec<ExprFilter>,
    pub exprs_any: bool,
    pub time: Option<TimeWindow>,
    /// CloudEvents attribute → the value it must have.
    pub context: Vec<(String, String)>,
    pub script: Option<expr::lua::Script>,
}

#[derive(Debug, Clone)]
pub struct DataFilter {
    pub path: DataPath,
    pub comparator: Comparator,
    /// Run with `.Input` = the value found; its output is compared instead.
    pub template: Option<GoTemplate>,
    pub values: DataValues,
    /// The values as written, for the reasons shown.
    pub shown: Vec<String>,
}

/// A data filter's values, parsed for its `type`.
#[derive(Debug, Clone)]
pub enum DataValues {
    /// Regular expressions, any of which may match (unanchored, as Go's `MatchString`).
    String(Vec<regex::Regex>),
    Number(Vec<f64>),
    Bool(Vec<bool>),
}

impl DataValues {
    pub fn type_name(&self) -> &'static str {
        match self {
            DataValues::String(_) => "string",
            DataValues::Number(_) => "number",
            DataValues::Bool(_) => "bool",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparator {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Comparator {
    fn parse(s: &str) -> Option<Comparator> {
        Some(match s {
            "" | "=" => Comparator::Eq,
            "!=" => Comparator::Ne,
            ">" => Comparator::Gt,
            ">=" => Comparator::Ge,
            "<" => Comparator::Lt,
            "<=" => Comparator::Le,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Comparator::Eq => "=",
            Comparator::Ne => "!=",
            Comparator::Gt => ">",
            Comparator::Ge => ">=",
            Comparator::Lt => "<",
            Comparator::Le => "<=",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ExprFilter {
    pub source: String,
    pub expr: expr::Expr,
    /// Variable name → where in the event's data its value is.
    pub fields: Vec<(String, DataPath)>,
}

/// `filters.time`: seconds since midnight UTC; `stop < start` spans midnight.
#[derive(Debug, Clone)]
pub struct TimeWindow {
    pub start: i64,
    pub stop: i64,
    pub start_text: String,
    pub stop_text: String,
}

/// A Go template with its source.
#[derive(Debug, Clone)]
pub struct GoTemplate {
    pub source: String,
    pub template: expr::gotemplate::Template,
}

/// A gjson-style path: keys separated by `.`, `\.` for a dot inside a key, numbers index
/// arrays, `#` is an array's length (or, followed by more, maps over it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPath {
    text: String,
    segments: Vec<String>,
}

impl DataPath {
    /// Refused: an empty path, empty segments and a trailing escape.
    pub fn parse(p: &str) -> Result<DataPath, String> {
        if p.is_empty() {
            return Err("is empty".into());
        }
        let mut segments = Vec::new();
        let mut cur = String::new();
        let mut chars = p.chars();
        let mut escaped_in_segment = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    let Some(n) = chars.next() else {
                        return Err("ends with an escape `\\`".into());
                    };
                    cur.push(n);
                    escaped_in_segment = true;
                }
                '.' => {
                    if cur.is_empty() && !escaped_in_segment {
                        return Err(format!("segment {} is empty", segments.len() + 1));
                    }
                    segments.push(std::mem::take(&mut cur));
                    escaped_in_segment = false;
                }
                _ => cur.push(c),
            }
        }
        if cur.is_empty() && !escaped_in_segment {
            return Err("ends with `.`".into());
        }
        segments.push(cur);
        Ok(DataPath {
            text: p.to_string(),
            segments,
        })
    }

    /// A path as the runtime meets it (a trigger parameter's `dest` after rewriting): split
    /// without checks.
    pub fn lenient(p: &str) -> DataPath {
        DataPath::parse(p).unwrap_or_else(|_| {
            let mut segments = Vec::new();
            let mut cur = String::new();
            let mut chars = p.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            cur.push(n);
                        }
                    }
                    '.' => segments.push(std::mem::take(&mut cur)),
                    _ => cur.push(c),
                }
            }
            segments.push(cur);
            DataPath {
                text: p.to_string(),
                segments,
            }
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn segments(&self) -> &[String] {
        &self.segments
    }
}

/// A compiled trigger.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub name: String,
    /// `None`: every dependency must have an event.
    pub conditions: Option<Condition>,
    /// The dependencies whose events this trigger takes.
    pub feeds: Vec<String>,
    /// `conditionsReset[].byTime`: `(cron, timezone)`.
    pub resets: Vec<(String, Option<String>)>,
    /// The trigger template as written (`name`, `conditions` and the one type's settings).
    /// It stays JSON: trigger-level parameters may rewrite any part of it, and its resource
    /// is any Kubernetes object.
    pub template: Value,
    /// `argoWorkflow`, `k8s`, `http`, `log`, or the unsupported type named.
    pub kind: Option<String>,
    /// The trigger-level parameters (applied to the template).
    pub parameters: Vec<Parameter>,
    /// The type's own parameters (applied to its resource or payload). `None` when
    /// trigger-level parameters rewrite them: they are compiled when they are known.
    pub type_parameters: Option<Vec<Parameter>>,
    pub retry: Retry,
    pub rate_limit: Option<RateLimit>,
    pub at_least_once: bool,
    pub dedupe: Option<Dedupe>,
}

/// A trigger's `conditions`: dependency names joined by `&&`, `||`, `!` and parentheses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Dependency(String),
    Not(Box<Condition>),
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
}

impl Condition {
    /// Parses `src` (names may contain `-`, as `test-dep-foo`) against the sensor's
    /// dependency names.
    pub fn parse(src: &str, names: &[String]) -> Result<Condition, String> {
        let tokens = condition_tokens(src);
        let mut p = CondParser {
            tokens: &tokens,
            pos: 0,
            names,
            depth: 0,
        };
        let c = p.or()?;
        if p.pos != tokens.len() {
            return Err(match tokens[p.pos].as_str() {
                ")" => "unbalanced `)`".into(),
                "!" => "`!` after a name".into(),
                "(" => "`(` after a name".into(),
                name => format!("{name:?} follows a name without && or ||"),
            });
        }
        Ok(c)
    }

    pub fn holds(&self, satisfied: &[String]) -> bool {
        match self {
            Condition::Dependency(n) => satisfied.contains(n),
            Condition::Not(c) => !c.holds(satisfied),
            Condition::And(a, b) => a.holds(satisfied) && b.holds(satisfied),
            Condition::Or(a, b) => a.holds(satisfied) || b.holds(satisfied),
        }
    }

    /// The dependency names it mentions, in order, without repeats.
    pub fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect(&self, out: &mut Vec<String>) {
        match self {
            Condition::Dependency(n) => {
                if !out.contains(n) {
                    out.push(n.clone());
                }
            }
            Condition::Not(c) => c.collect(out),
            Condition::And(a, b) | Condition::Or(a, b) => {
                a.collect(out);
                b.collect(out);
            }
        }
    }

    /// Whether it can need events of two dependencies at once (an `&&` over two names).
    fn needs_several(&self) -> bool {
        match self {
            Condition::Dependency(_) => false,
            Condition::Not(c) => c.needs_several(),
            Condition::Or(a, b) => a.needs_several() || b.needs_several(),
            Condition::And(..) => self.names().len() > 1,
        }
    }
}

fn condition_tokens(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = src.trim();
    while !rest.is_empty() {
        let (tok, r) = if let Some(r) = rest.strip_prefix("&&") {
            ("&&".to_string(), r)
        } else if let Some(r) = rest.strip_prefix("||") {
            ("||".to_string(), r)
        } else if rest.starts_with(['!', '(', ')']) {
            (rest[..1].to_string(), &rest[1..])
        } else {
            let len = rest
                .find(|c: char| c.is_whitespace() || "&|!()".contains(c))
                .unwrap_or(rest.len())
                .max(1);
            (rest[..len].to_string(), &rest[len..])
        };
        out.push(tok);
        rest = r.trim_start();
    }
    out
}

struct CondParser<'a> {
    tokens: &'a [String],
    pos: usize,
    names: &'a [String],
    depth: usize,
}

impl CondParser<'_> {
    fn or(&mut self) -> Result<Condition, String> {
        let mut v = self.and()?;
        while self.tokens.get(self.pos).is_some_and(|t| t == "||") {
            self.pos += 1;
            v = Condition::Or(Box::new(v), Box::new(self.and()?));
        }
        Ok(v)
    }
    fn and(&mut self) -> Result<Condition, String> {
        let mut v = self.unary()?;
        while self.tokens.get(self.pos).is_some_and(|t| t == "&&") {
            self.pos += 1;
            v = Condition::And(Box::new(v), Box::new(self.unary()?));
        }
        Ok(v)
    }
    fn unary(&mut self) -> Result<Condition, String> {
        self.depth += 1;
        if self.depth > expr::MAX_NESTING {
            return Err(format!("nested deeper than {}", expr::MAX_NESTING));
        }
        let Some(tok) = self.tokens.get(self.pos).cloned() else {
            return Err("incomplete expression".into());
        };
        self.pos += 1;
        let v = match tok.as_str() {
            "!" => Condition::Not(Box::new(self.unary()?)),
            "(" => {
                let v = self.or()?;
                if self.tokens.get(self.pos).map(String::as_str) != Some(")") {
                    return Err("incomplete expression".into());
                }
                self.pos += 1;
                v
            }
            "&&" | "||" => return Err("an operator where a dependency name belongs".into()),
            ")" => return Err("unbalanced `)`".into()),
            name => {
                if !self.names.iter().any(|n| n == name) {
                    return Err(format!(
                        "{name:?} is not a dependency of this sensor (dependencies: {})",
                        self.names.join(", ")
                    ));
                }
                Condition::Dependency(name.to_string())
            }
        };
        self.depth -= 1;
        Ok(v)
    }
}

/// A trigger parameter: where its value comes from, where it goes, how it combines.
#[derive(Debug, Clone)]
pub struct Parameter {
    pub dependency: Option<String>,
    pub data_key: Option<DataPath>,
    pub data_template: Option<GoTemplate>,
    pub context_key: Option<DataPath>,
    pub context_template: Option<GoTemplate>,
    /// The default, when the event lacks the value.
    pub value: Option<String>,
    pub use_raw_data: bool,
    pub dest: DataPath,
    pub operation: Operation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Overwrite,
    Append,
    Prepend,
}

/// `retryStrategy` (Argo's `Backoff`): `steps` attempts, the first wait `duration`, each next
/// one `factor` times longer, each lengthened by up to `jitter` of itself at random (so
/// many sensors failing against one endpoint do not retry in step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    pub steps: u32,
    pub duration_ms: i64,
    pub factor: f64,
    pub jitter: f64,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            steps: 1,
            duration_ms: 1000,
            factor: 1.0,
            jitter: 0.0,
        }
    }
}

/// `rateLimit`: at most `per_unit` firings per `unit_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_unit: u64,
    pub unit_ms: i64,
}

/// Riposte's trigger `dedupe: {key: EXPR, window: DURATION}`.
#[derive(Debug, Clone)]
pub struct Dedupe {
    pub source: String,
    pub key: expr::Expr,
    pub window_ms: i64,
}

// ---- The document as Argo writes it. -------------------------------------------------------

#[derive(Deserialize, Default)]
struct SensorDoc {
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: SensorSpecDoc,
    /// `apiVersion`, `kind`, `status`: not the sensor's behaviour.
    #[serde(flatten)]
    _rest: serde_json::Map<String, Value>,
}

#[derive(Deserialize, Default)]
struct Metadata {
    name: Option<String>,
    namespace: Option<String>,
    #[serde(flatten)]
    _rest: serde_json::Map<String, Value>,
}

#[derive(Deserialize, Default)]
struct SensorSpecDoc {
    #[serde(default)]
    dependencies: Vec<DependencyDoc>,
    #[serde(default)]
    triggers: Vec<TriggerDoc>,
    /// The sensor pod's template: sensors run inside the server.
    #[serde(default, rename = "template")]
    _pod_template: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DependencyDoc {
    name: Option<String>,
    event_source_name: Option<String>,
    event_name: Option<String>,
    filters: Option<FiltersDoc>,
    filters_logical_operator: Option<String>,
    transform: Option<TransformDoc>,
}

#[derive(Deserialize)]
struct TransformDoc {
    jq: Option<String>,
    script: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FiltersDoc {
    #[serde(default)]
    data: Vec<DataFilterDoc>,
    #[serde(default)]
    exprs: Vec<ExprFilterDoc>,
    time: Option<TimeDoc>,
    context: Option<ContextDoc>,
    data_logical_operator: Option<String>,
    expr_logical_operator: Option<String>,
    script: Option<String>,
}

#[derive(Deserialize)]
struct DataFilterDoc {
    path: Option<String>,
    #[serde(rename = "type")]
    ty: Option<String>,
    #[serde(default)]
    value: Vec<Scalar>,
    comparator: Option<String>,
    template: Option<String>,
}

/// A string Argo declares that YAML may write as a number or a boolean.
#[derive(Clone)]
pub(crate) enum Scalar {
    String(String),
    Number(serde_json::Number),
    Bool(bool),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Scalar::String(s)),
            Value::Number(n) => Ok(Scalar::Number(n)),
            Value::Bool(b) => Ok(Scalar::Bool(b)),
            other => Err(serde::de::Error::custom(format!(
                "expected a string, a number or a boolean, found {other}"
            ))),
        }
    }
}

impl Scalar {
    pub(crate) fn text(&self) -> String {
        match self {
            Scalar::String(s) => s.clone(),
            Scalar::Number(n) => n.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

#[derive(Deserialize)]
struct ExprFilterDoc {
    expr: Option<String>,
    #[serde(default)]
    fields: Vec<PayloadFieldDoc>,
}

#[derive(Deserialize)]
struct PayloadFieldDoc {
    name: Option<String>,
    path: Option<String>,
}

#[derive(Deserialize)]
struct TimeDoc {
    start: Option<String>,
    stop: Option<String>,
}

/// The CloudEvents attributes a context filter may require.
#[derive(Deserialize)]
struct ContextDoc {
    #[serde(rename = "type")]
    ty: Option<String>,
    subject: Option<String>,
    source: Option<String>,
    datacontenttype: Option<String>,
    id: Option<String>,
    specversion: Option<String>,
    time: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TriggerDoc {
    template: Option<TriggerTemplateDoc>,
    #[serde(default)]
    parameters: Vec<Value>,
    retry_strategy: Option<BackoffDoc>,
    rate_limit: Option<RateLimitDoc>,
    at_least_once: Option<bool>,
    /// Riposte's: fire the same logical alert once per window.
    dedupe: Option<DedupeDoc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TriggerTemplateDoc {
    name: Option<String>,
    conditions: Option<String>,
    #[serde(default)]
    conditions_reset: Vec<ConditionsResetDoc>,
    /// The trigger's type and its settings (`argoWorkflow: {...}`), kept as written.
    #[serde(flatten)]
    body: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConditionsResetDoc {
    by_time: Option<ByTimeDoc>,
}

#[derive(Deserialize)]
struct ByTimeDoc {
    cron: Option<String>,
    timezone: Option<String>,
}

#[derive(Deserialize)]
struct BackoffDoc {
    steps: Option<i64>,
    /// Nanoseconds, or a duration string like `1s` (Argo's `Int64OrString`).
    duration: Option<Scalar>,
    /// A number or its string (Argo's `Amount`).
    factor: Option<Scalar>,
    jitter: Option<Scalar>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RateLimitDoc {
    unit: Option<String>,
    requests_per_unit: Option<i64>,
}

#[derive(Deserialize)]
struct DedupeDoc {
    key: Option<String>,
    window: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ParameterDoc {
    src: Option<ParameterSrcDoc>,
    dest: Option<String>,
    operation: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ParameterSrcDoc {
    dependency_name: Option<String>,
    data_key: Option<String>,
    data_template: Option<String>,
    context_key: Option<String>,
    context_template: Option<String>,
    value: Option<Scalar>,
    use_raw_data: Option<bool>,
}

// ---- Compilation. ----------------------------------------------------------------------------

/// What compiling a sensor gave: the sensor when there was no error, and every problem.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub sensor: Option<CompiledSensor>,
    pub problems: Vec<Problem>,
}

/// Compiles a Sensor document (its JSON, as stored or as loaded from YAML).
pub fn compile(doc: &Value) -> Compiled {
    let (sensor, problems) = compile_document(doc, sensor);
    Compiled { sensor, problems }
}

/// Reads `doc` as `D` and builds what it compiles to: `None` when there was an error, and
/// every problem (shared by the definitions' compilers).
pub(crate) fn compile_document<D: serde::de::DeserializeOwned, T>(
    doc: &Value,
    build: impl FnOnce(&mut Cx, D) -> T,
) -> (Option<T>, Vec<Problem>) {
    let mut cx = Cx::default();
    let Some(parsed) = typed::<D>(&mut cx, doc, "") else {
        return (None, cx.problems);
    };
    let built = build(&mut cx, parsed);
    let failed = cx.problems.iter().any(|p| p.severity == Severity::Error);
    ((!failed).then_some(built), cx.problems)
}

/// [`compile`], with the errors as one error (what the server needs).
pub fn compile_sensor(doc: &Value) -> Result<CompiledSensor, CompileError> {
    let c = compile(doc);
    c.sensor
        .ok_or_else(|| CompileError::of("sensor", doc, c.problems))
}

impl CompileError {
    /// The errors among `problems` of the definition `doc`.
    pub(crate) fn of(kind: &'static str, doc: &Value, problems: Vec<Problem>) -> CompileError {
        CompileError {
            kind,
            name: doc["metadata"]["name"].as_str().unwrap_or("").to_string(),
            errors: problems
                .into_iter()
                .filter(|p| p.severity == Severity::Error)
                .collect(),
        }
    }
}

/// Compiles parameters known only at run time (a trigger's type parameters after
/// trigger-level parameters rewrote them).
pub fn compile_parameters(parameters: &Value, names: &[String]) -> Result<Vec<Parameter>, String> {
    let mut cx = Cx::default();
    let docs: Vec<Value> = parameters.as_array().cloned().unwrap_or_default();
    let out: Vec<Parameter> = docs
        .iter()
        .enumerate()
        .filter_map(|(i, p)| parameter(&mut cx, p, names, &format!("parameters[{i}]")))
        .collect();
    match cx
        .problems
        .into_iter()
        .find(|p| p.severity == Severity::Error)
    {
        Some(e) => Err(format!("{}: {}", e.path, e.message)),
        None => Ok(out),
    }
}

/// The problems found so far (shared with the other definitions' compilers).
#[derive(Default)]
pub(crate) struct Cx {
    pub(crate) problems: Vec<Problem>,
}

impl Cx {
    pub(crate) fn error(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_string(),
            severity: Severity::Error,
            message: message.into(),
        });
    }
    pub(crate) fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_string(),
            severity: Severity::Warning,
            message: message.into(),
        });
    }
}

fn join(base: &str, rest: &str) -> String {
    match (base.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_string(),
        (_, true) => base.to_string(),
        _ if rest.starts_with('[') => format!("{base}{rest}"),
        _ => format!("{base}.{rest}"),
    }
}

/// `v` as `T`: a type error is an error at its path, each field `T` does not have a warning.
pub(crate) fn typed<T: serde::de::DeserializeOwned>(
    cx: &mut Cx,
    v: &Value,
    base: &str,
) -> Option<T> {
    let mut ignored = Vec::new();
    let mut note = |path: serde_ignored::Path| ignored.push(ignored_path(&path));
    let de = serde_ignored::Deserializer::new(v, &mut note);
    let result: Result<T, _> = serde_path_to_error::deserialize(de);
    for p in ignored {
        let p = join(base, &p);
        cx.warn(
            &p,
            format!("field `{p}` is not implemented by Riposte and is ignored"),
        );
    }
    match result {
        Ok(t) => Some(t),
        Err(e) => {
            let path = join(base, &e.path().to_string().replace("?", ""));
            let path = path.trim_end_matches('.').to_string();
            let at = if path.is_empty() { "the object" } else { &path };
            cx.error(&path, format!("{at}: {}", e.inner()));
            None
        }
    }
}

fn ignored_path(p: &serde_ignored::Path) -> String {
    match p {
        serde_ignored::Path::Root => String::new(),
        serde_ignored::Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        serde_ignored::Path::Map { parent, key } => join(&ignored_path(parent), key),
        serde_ignored::Path::Some { parent }
        | serde_ignored::Path::NewtypeStruct { parent }
        | serde_ignored::Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

pub(crate) fn required(cx: &mut Cx, v: Option<String>, path: &str, field: &str) -> String {
    match v.filter(|s| !s.is_empty()) {
        Some(s) => s,
        None => {
            cx.error(path, format!("{} is required", join(path, field)));
            String::new()
        }
    }
}

fn any_of(cx: &mut Cx, op: Option<&str>, path: &str) -> bool {
    match op.unwrap_or("") {
        "" | "and" => false,
        "or" => true,
        other => {
            cx.error(
                path,
                format!("logical operator {other:?} is not `and` or `or`"),
            );
            false
        }
    }
}

fn sensor(cx: &mut Cx, doc: SensorDoc) -> CompiledSensor {
    let name = match doc.metadata.name.filter(|n| !n.is_empty()) {
        Some(n) => n,
        None => {
            cx.error("metadata", "metadata.name is required");
            String::new()
        }
    };
    let spec = doc.spec;
    if spec.dependencies.is_empty() {
        cx.error("spec", "spec.dependencies must name at least one event");
    }
    let mut dependencies: Vec<Dependency> = Vec::new();
    for (i, d) in spec.dependencies.into_iter().enumerate() {
        let path = format!("spec.dependencies[{i}]");
        let dep = dependency(cx, d, &path);
        if !dep.name.is_empty() && dependencies.iter().any(|x| x.name == dep.name) {
            cx.error(
                &format!("{path}.name"),
                format!("dependency {:?} is defined twice", dep.name),
            );
        }
        dependencies.push(dep);
    }
    let names: Vec<String> = dependencies
        .iter()
        .map(|d| d.name.clone())
        .filter(|n| !n.is_empty())
        .collect();
    if spec.triggers.is_empty() {
        cx.error("spec", "spec.triggers must have at least one trigger");
    }
    let triggers = spec
        .triggers
        .into_iter()
        .enumerate()
        .map(|(i, t)| trigger(cx, t, &names, &format!("spec.triggers[{i}]")))
        .collect();
    CompiledSensor {
        namespace: doc.metadata.namespace.unwrap_or_default(),
        name,
        dependencies,
        triggers,
    }
}

fn dependency(cx: &mut Cx, d: DependencyDoc, path: &str) -> Dependency {
    let name = required(cx, d.name, path, "name");
    let event_source_name = required(cx, d.event_source_name, path, "eventSourceName");
    let event_name = required(cx, d.event_name, path, "eventName");
    let filters_any = any_of(
        cx,
        d.filters_logical_operator.as_deref(),
        &format!("{path}.filtersLogicalOperator"),
    );
    let transform = d.transform.and_then(|t| {
        let tp = format!("{path}.transform");
        if let Some(jq) = t.jq {
            return match expr::jq::Program::compile(&jq) {
                Ok(p) => Some(Transform::Jq(p)),
                Err(e) => {
                    cx.error(&format!("{tp}.jq"), e.to_string());
                    None
                }
            };
        }
        let script = t.script?;
        match expr::lua::Script::compile(&script) {
            Ok(s) => Some(Transform::Lua(s)),
            Err(e) => {
                cx.error(
                    &format!("{tp}.script"),
                    format!("Lua script does not compile: {e}"),
                );
                None
            }
        }
    });
    let filters = d
        .filters
        .map(|f| filters(cx, f, &format!("{path}.filters")));
    Dependency {
        name,
        event_source_name,
        event_name,
        filters,
        filters_any,
        transform,
    }
}

fn data_path(cx: &mut Cx, p: Option<String>, path: &str, what: &str) -> Option<DataPath> {
    let p = p?;
    match DataPath::parse(&p) {
        Ok(dp) => Some(dp),
        Err(e) => {
            cx.error(path, format!("{what} {p:?}: {e}"));
            None
        }
    }
}

fn go_template(cx: &mut Cx, t: Option<String>, path: &str, what: &str) -> Option<GoTemplate> {
    let source = t?;
    match expr::gotemplate::Template::parse(&source) {
        Ok(template) => Some(GoTemplate { source, template }),
        Err(e) => {
            cx.error(
                path,
                format!(
                    "{what} {source:?}: {} (at byte {} of the template)",
                    e.message, e.offset
                ),
            );
            None
        }
    }
}

fn filters(cx: &mut Cx, f: FiltersDoc, path: &str) -> Filters {
    let script = f.script.and_then(|s| match expr::lua::Script::compile(&s) {
        Ok(s) => Some(s),
        Err(e) => {
            cx.error(
                &format!("{path}.script"),
                format!("Lua script does not compile: {e}"),
            );
            None
        }
    });
    let data_any = any_of(
        cx,
        f.data_logical_operator.as_deref(),
        &format!("{path}.dataLogicalOperator"),
    );
    let exprs_any = any_of(
        cx,
        f.expr_logical_operator.as_deref(),
        &format!("{path}.exprLogicalOperator"),
    );
    let data = f
        .data
        .into_iter()
        .enumerate()
        .filter_map(|(i, d)| data_filter(cx, d, &format!("{path}.data[{i}]")))
        .collect();
    let exprs = f
        .exprs
        .into_iter()
        .enumerate()
        .filter_map(|(i, e)| expr_filter(cx, e, &format!("{path}.exprs[{i}]")))
        .collect();
    let time = f.time.and_then(|t| {
        let tp = format!("{path}.time");
        let clock = |cx: &mut Cx, v: Option<String>, k: &str| match v {
            Some(t) => match clock_time(&t) {
                Some(s) => Some((s, t)),
                None => {
                    cx.error(&format!("{tp}.{k}"), format!("time {t:?} is not HH:MM:SS"));
                    None
                }
            },
            None => {
                cx.error(&tp, format!("{tp}.{k} is required"));
                None
            }
        };
        let start = clock(cx, t.start, "start");
        let stop = clock(cx, t.stop, "stop");
        let ((start, start_text), (stop, stop_text)) = (start?, stop?);
        Some(TimeWindow {
            start,
            stop,
            start_text,
            stop_text,
        })
    });
    let context = f
        .context
        .map(|c| {
            [
                ("type", c.ty),
                ("subject", c.subject),
                ("source", c.source),
                ("datacontenttype", c.datacontenttype),
                ("id", c.id),
                ("specversion", c.specversion),
                ("time", c.time),
            ]
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v?)))
            .collect()
        })
        .unwrap_or_default();
    Filters {
        data,
        data_any,
        exprs,
        exprs_any,
        time,
        context,
        script,
    }
}

fn data_filter(cx: &mut Cx, d: DataFilterDoc, p: &str) -> Option<DataFilter> {
    let path = match d.path.filter(|s| !s.is_empty()) {
        None => {
            cx.error(p, format!("{p}.path is required"));
            None
        }
        Some(gp) => data_path(cx, Some(gp), &format!("{p}.path"), "data path"),
    };
    let comparator = match Comparator::parse(d.comparator.as_deref().unwrap_or("")) {
        Some(c) => Some(c),
        None => {
            cx.error(
                &format!("{p}.comparator"),
                format!(
                    "comparator {:?} is not one of =, !=, >, >=, <, <=",
                    d.comparator.unwrap_or_default()
                ),
            );
            None
        }
    };
    let template = go_template(cx, d.template, &format!("{p}.template"), "template");
    if d.value.is_empty() {
        cx.error(p, format!("{p}.value must list at least one value"));
    }
    let shown: Vec<String> = d.value.iter().map(Scalar::text).collect();
    let ty = d.ty.unwrap_or_default();
    let mut bad = false;
    // Each value parsed for the filter's type; one that does not parse is an error at it.
    let mut each = |cx: &mut Cx, parse: &dyn Fn(&str) -> Result<(), String>| {
        for (j, v) in shown.iter().enumerate() {
            if let Err(why) = parse(v) {
                bad = true;
                cx.error(&format!("{p}.value[{j}]"), why);
            }
        }
    };
    let values = match ty.as_str() {
        "string" => {
            each(cx, &|v| {
                regex::Regex::new(v)
                    .map(drop)
                    .map_err(|e| format!("{v:?} is not a regular expression: {e}"))
            });
            DataValues::String(
                shown
                    .iter()
                    .filter_map(|v| regex::Regex::new(v).ok())
                    .collect(),
            )
        }
        "number" => {
            each(cx, &|v| {
                v.trim()
                    .parse::<f64>()
                    .map(drop)
                    .map_err(|_| format!("{v} is not a number, but the filter's type is number"))
            });
            DataValues::Number(shown.iter().filter_map(|v| v.trim().parse().ok()).collect())
        }
        "bool" => {
            each(cx, &|v| {
                v.trim().parse::<bool>().map(drop).map_err(|_| {
                    format!("{v:?} is not true or false, but the filter's type is bool")
                })
            });
            DataValues::Bool(shown.iter().filter_map(|v| v.trim().parse().ok()).collect())
        }
        other => {
            cx.error(
                &format!("{p}.type"),
                format!("data filter type {other:?} is not string, number or bool"),
            );
            return None;
        }
    };
    if bad {
        return None;
    }
    Some(DataFilter {
        path: path?,
        comparator: comparator?,
        template,
        values,
        shown,
    })
}

fn expr_filter(cx: &mut Cx, e: ExprFilterDoc, p: &str) -> Option<ExprFilter> {
    let compiled = match e.expr.filter(|s| !s.is_empty()) {
        None => {
            cx.error(p, format!("{p}.expr is required"));
            None
        }
        Some(src) => match expr::parse(&src, expr::Dialect::Govaluate) {
            Ok(x) => Some((src, x)),
            Err(err) => {
                cx.error(&format!("{p}.expr"), format!("expression {src:?}: {err}"));
                None
            }
        },
    };
    let mut fields = Vec::new();
    for (j, field) in e.fields.into_iter().enumerate() {
        let fp = format!("{p}.fields[{j}]");
        let name = required(cx, field.name, &fp, "name");
        let path = match field.path.filter(|s| !s.is_empty()) {
            None => {
                cx.error(&fp, format!("{fp}.path is required"));
                None
            }
            Some(gp) => data_path(cx, Some(gp), &format!("{fp}.path"), "data path"),
        };
        if let Some(path) = path {
            fields.push((name, path));
        }
    }
    let (source, expr) = compiled?;
    Some(ExprFilter {
        source,
        expr,
        fields,
    })
}

/// Seconds since midnight of an `HH:MM:SS` clock time.
fn clock_time(t: &str) -> Option<i64> {
    let parts: Vec<&str> = t.split(':').collect();
    let ok = parts.len() == 3
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()))
        && parts[0] < "24"
        && parts[1] < "60"
        && parts[2] < "60";
    if !ok {
        return None;
    }
    let n = |i: usize| parts[i].parse::<i64>().ok();
    Some(n(0)? * 3600 + n(1)? * 60 + n(2)?)
}

fn trigger(cx: &mut Cx, t: TriggerDoc, names: &[String], path: &str) -> Trigger {
    let tpath = format!("{path}.template");
    let tpl = t.template.unwrap_or(TriggerTemplateDoc {
        name: None,
        conditions: None,
        conditions_reset: Vec::new(),
        body: serde_json::Map::new(),
    });
    let name = required(cx, tpl.name.clone(), &tpath, "name");
    let mut types = Vec::new();
    for k in tpl.body.keys() {
        if TRIGGER_TYPES.contains(&k.as_str()) {
            types.push(k.clone());
        } else {
            cx.warn(
                &format!("{tpath}.{k}"),
                format!(
                    "trigger type `{k}` is not implemented by Riposte (it carries out {}); this trigger does nothing",
                    TRIGGER_TYPES.join(", ")
                ),
            );
        }
    }
    if types.len() > 1 {
        cx.error(
            &tpath,
            format!(
                "a trigger has one type; this one has {}",
                types.join(" and ")
            ),
        );
    }
    let kind = types
        .first()
        .cloned()
        .or_else(|| tpl.body.keys().next().cloned());
    let conditions_text = tpl.conditions.clone().filter(|c| !c.trim().is_empty());
    let conditions =
        conditions_text
            .as_deref()
            .and_then(|src| match Condition::parse(src, names) {
                Ok(c) => Some(c),
                Err(msg) => {
                    cx.error(
                        &format!("{tpath}.conditions"),
                        format!("conditions {src:?}: {msg}"),
                    );
                    None
                }
            });
    let feeds = match &conditions {
        Some(c) => c.names(),
        None => names.to_vec(),
    };
    let resets = tpl
        .conditions_reset
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let by_time = r.by_time?;
            match by_time.cron.filter(|c| !c.is_empty()) {
                Some(cron) => Some((cron, by_time.timezone)),
                None => {
                    cx.error(
                        &format!("{tpath}.conditionsReset[{i}].byTime"),
                        format!("{tpath}.conditionsReset[{i}].byTime.cron is required"),
                    );
                    None
                }
            }
        })
        .collect();
    let parameters: Vec<Parameter> = t
        .parameters
        .iter()
        .enumerate()
        .filter_map(|(j, p)| parameter(cx, p, names, &format!("{path}.parameters[{j}]")))
        .collect();
    // Trigger-level parameters may rewrite the trigger itself (Argo's tutorial sets
    // `argoWorkflow.parameters.0.src.dependencyName` from the event): the type's own
    // parameters are then compiled when they are known, at run time.
    let rewritten = kind.as_ref().is_some_and(|ty| {
        parameters
            .iter()
            .any(|p| p.dest.as_str().starts_with(&format!("{ty}.parameters")))
    });
    let type_parameters = if rewritten {
        None
    } else {
        let list_key = if kind.as_deref() == Some("http") {
            "payload"
        } else {
            "parameters"
        };
        let list = kind
            .as_ref()
            .and_then(|ty| tpl.body.get(ty))
            .map(|b| b[list_key].clone())
            .unwrap_or(Value::Null);
        Some(
            list.as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .filter_map(|(j, p)| {
                    let ty = kind.as_deref().unwrap_or("");
                    parameter(cx, p, names, &format!("{tpath}.{ty}.{list_key}[{j}]"))
                })
                .collect(),
        )
    };
    let retry = t
        .retry_strategy
        .map(|b| retry(cx, b, &format!("{path}.retryStrategy")))
        .unwrap_or_default();
    let rate_limit = t
        .rate_limit
        .and_then(|r| rate_limit(cx, r, &format!("{path}.rateLimit")));
    let dedupe = t
        .dedupe
        .and_then(|d| dedupe(cx, d, &format!("{path}.dedupe")));
    let mut template = serde_json::Map::new();
    template.insert("name".into(), Value::String(name.clone()));
    if let Some(c) = &tpl.conditions {
        template.insert("conditions".into(), Value::String(c.clone()));
    }
    template.extend(tpl.body);
    Trigger {
        name,
        conditions,
        feeds,
        resets,
        template: Value::Object(template),
        kind,
        parameters,
        type_parameters,
        retry,
        rate_limit,
        at_least_once: t.at_least_once.unwrap_or(false),
        dedupe,
    }
}

fn parameter(cx: &mut Cx, v: &Value, names: &[String], path: &str) -> Option<Parameter> {
    let p: ParameterDoc = typed(cx, v, path)?;
    let sp = format!("{path}.src");
    let src = p.src.unwrap_or(ParameterSrcDoc {
        dependency_name: None,
        data_key: None,
        data_template: None,
        context_key: None,
        context_template: None,
        value: None,
        use_raw_data: None,
    });
    let mut ok = true;
    match &src.dependency_name {
        Some(d) if names.iter().any(|n| n == d) => {}
        Some(d) => {
            ok = false;
            cx.error(
                &format!("{sp}.dependencyName"),
                format!(
                    "dependency {d:?} is not defined by this sensor (dependencies: {})",
                    names.join(", ")
                ),
            );
        }
        None if src.value.is_none() => {
            ok = false;
            cx.error(
                &sp,
                format!("{sp} needs dependencyName (or a constant value)"),
            );
        }
        None => {}
    }
    let data_key = data_path(cx, src.data_key, &format!("{sp}.dataKey"), "dataKey");
    let context_key = data_path(
        cx,
        src.context_key,
        &format!("{sp}.contextKey"),
        "contextKey",
    );
    let data_template = go_template(
        cx,
        src.data_template,
        &format!("{sp}.dataTemplate"),
        "dataTemplate",
    );
    let context_template = go_template(
        cx,
        src.context_template,
        &format!("{sp}.contextTemplate"),
        "contextTemplate",
    );
    let dest = match p.dest.filter(|d| !d.is_empty()) {
        None => {
            cx.error(path, format!("{path}.dest is required"));
            None
        }
        Some(d) => data_path(cx, Some(d), &format!("{path}.dest"), "dest"),
    };
    let operation = match p.operation.as_deref().unwrap_or("") {
        "" | "overwrite" => Some(Operation::Overwrite),
        "append" => Some(Operation::Append),
        "prepend" => Some(Operation::Prepend),
        other => {
            cx.error(
                &format!("{path}.operation"),
                format!("operation {other:?} is not overwrite, append or prepend"),
            );
            None
        }
    };
    if !ok {
        return None;
    }
    Some(Parameter {
        dependency: src.dependency_name,
        data_key,
        data_template,
        context_key,
        context_template,
        value: src.value.as_ref().map(Scalar::text),
        use_raw_data: src.use_raw_data.unwrap_or(false),
        dest: dest?,
        operation: operation?,
    })
}

fn retry(cx: &mut Cx, b: BackoffDoc, path: &str) -> Retry {
    let mut r = Retry::default();
    if let Some(steps) = b.steps {
        if !(1..=20).contains(&steps) {
            cx.warn(
                &format!("{path}.steps"),
                format!("steps {steps} is outside 1–20; Riposte makes at most 20 attempts"),
            );
        }
        r.steps = steps.clamp(1, 20) as u32;
    }
    match b.duration {
        // Argo's `Int64OrString`: a bare number is nanoseconds.
        Some(Scalar::Number(n)) => {
            r.duration_ms = n.as_f64().map(|ns| (ns / 1e6) as i64).unwrap_or(1000);
        }
        Some(Scalar::String(s)) => match expr::time::parse_duration_millis(&s) {
            Some(ms) if ms >= 0 => r.duration_ms = ms,
            _ => cx.error(
                &format!("{path}.duration"),
                format!("duration {s:?} is not a duration like 1s or 500ms"),
            ),
        },
        Some(Scalar::Bool(_)) => cx.error(
            &format!("{path}.duration"),
            "duration must be a duration like 1s (or nanoseconds)",
        ),
        None => {}
    }
    r.duration_ms = r.duration_ms.clamp(0, 600_000);
    if let Some(f) = b.factor {
        match f.text().trim().parse::<f64>() {
            Ok(x) if x.is_finite() && x > 0.0 => r.factor = x.clamp(1.0, 10.0),
            _ => cx.error(
                &format!("{path}.factor"),
                format!("factor {:?} is not a positive number", f.text()),
            ),
        }
    }
    if let Some(j) = b.jitter {
        match j.text().trim().parse::<f64>() {
            Ok(x) if x.is_finite() && (0.0..=1.0).contains(&x) => r.jitter = x,
            _ => cx.error(
                &format!("{path}.jitter"),
                format!("jitter {:?} is not a number from 0 to 1", j.text()),
            ),
        }
    }
    r
}

fn rate_limit(cx: &mut Cx, r: RateLimitDoc, path: &str) -> Option<RateLimit> {
    let unit_ms = match r.unit.as_deref().unwrap_or("Second") {
        "Second" => 1_000,
        "Minute" => 60_000,
        "Hour" => 3_600_000,
        other => {
            cx.error(
                &format!("{path}.unit"),
                format!("unit {other:?} is not Second, Minute or Hour"),
            );
            return None;
        }
    };
    // Argo: a limit of 0 (or none) does not limit.
    let per_unit = r.requests_per_unit.filter(|n| *n > 0)? as u64;
    Some(RateLimit { per_unit, unit_ms })
}

fn dedupe(cx: &mut Cx, d: DedupeDoc, dp: &str) -> Option<Dedupe> {
    let window_ms = match d.window {
        None => 60_000,
        Some(w) => match expr::time::parse_duration_millis(&w) {
            Some(ms) if ms > 0 => ms,
            _ => {
                cx.error(
                    &format!("{dp}.window"),
                    format!("window {w:?} is not a duration like 60s or 10m"),
                );
                return None;
            }
        },
    };
    match d.key {
        Some(source) => match expr::parse(&source, expr::Dialect::Expr) {
            Ok(key) => Some(Dedupe {
                source,
                key,
                window_ms,
            }),
            Err(e) => {
                cx.error(&format!("{dp}.key"), format!("dedupe key {source:?}: {e}"));
                None
            }
        },
        None => {
            cx.error(
                dp,
                format!(
                    "{dp}.key (an expression over the event, e.g. event.body.rule) is required"
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn data_paths() {
        for (ok, segments) in [
            ("body.a", vec!["body", "a"]),
            (
                "body.output_fields.k8s\\.pod\\.name",
                vec!["body", "output_fields", "k8s.pod.name"],
            ),
            ("a.#", vec!["a", "#"]),
            ("a.0.b", vec!["a", "0", "b"]),
            ("x", vec!["x"]),
        ] {
            assert_eq!(
                DataPath::parse(ok).map(|p| p.segments().to_vec()),
                Ok(segments.into_iter().map(String::from).collect()),
                "{ok}"
            );
        }
        for (bad, why) in [
            ("", "is empty"),
            ("a..b", "segment 2 is empty"),
            (".a", "segment 1 is empty"),
            ("a.", "ends with `.`"),
            ("a\\", "ends with an escape `\\`"),
        ] {
            assert_eq!(DataPath::parse(bad), Err(why.to_string()), "{bad}");
        }
    }

    #[test]
    fn conditions_table() {
        let names: Vec<String> = ["a", "b", "test-dep", "test-dep-c"]
            .map(String::from)
            .to_vec();
        let sat = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        for (src, satisfied, holds) in [
            ("a && b", sat(&["a", "b"]), true),
            ("a && b", sat(&["a"]), false),
            ("a || b", sat(&["b"]), true),
            ("!a && (b || test-dep-c)", sat(&["test-dep-c"]), true),
            ("!a && (b || test-dep-c)", sat(&["a", "b"]), false),
            ("a||b&&test-dep-c", sat(&["a"]), true),
            // A name is a whole token: `test-dep` is not satisfied by `test-dep-c`.
            ("test-dep", sat(&["test-dep-c"]), false),
            ("!(test-dep && test-dep-c)", sat(&["test-dep"]), true),
        ] {
            let c = Condition::parse(src, &names).unwrap_or_else(|e| panic!("{src}: {e}"));
            assert_eq!(c.holds(&satisfied), holds, "{src} with {satisfied:?}");
        }
        for (src, why) in [
            ("a &&", "incomplete expression"),
            ("&& a", "an operator where a dependency name belongs"),
            ("a b", "\"b\" follows a name without && or ||"),
            ("(a", "incomplete expression"),
            ("a)", "unbalanced `)`"),
            (
                "a && z",
                "\"z\" is not a dependency of this sensor (dependencies: a, b, test-dep, test-dep-c)",
            ),
        ] {
            assert_eq!(Condition::parse(src, &names), Err(why.to_string()), "{src}");
        }
        let deep = format!("{}a{}", "(".repeat(300), ")".repeat(300));
        assert!(Condition::parse(&deep, &names).is_err());
    }

    fn doc(spec: Value) -> Value {
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Sensor",
               "metadata": {"name": "s", "namespace": "ns", "labels": {"a": "b"}}, "spec": spec})
    }

    #[test]
    fn compiles_argo_fields_with_their_defaults_and_quirks() {
        let s = compile_sensor(&doc(json!({
            "dependencies": [
                {"name": "a", "eventSourceName": "w", "eventName": "a",
                 "filters": {"data": [{"path": "body.n", "type": "number", "value": [40, "41"], "comparator": ">"}]}},
                {"name": "b", "eventSourceName": "w", "eventName": "b"},
            ],
            "triggers": [{
                "template": {"name": "t", "conditions": "a && b", "log": {}},
                "retryStrategy": {"steps": 3, "duration": 2_000_000_000i64, "factor": "2", "jitter": 0.1},
                "rateLimit": {"unit": "Minute", "requestsPerUnit": 5},
            }, {
                "template": {"name": "u", "http": {"url": "http://x", "payload": [
                    {"src": {"dependencyName": "a", "dataKey": "body.n"}, "dest": "n"}]}},
                "retryStrategy": {"duration": "500ms"},
            }],
        })))
        .expect("compiles");
        assert_eq!(s.key(), "ns/s");
        assert!(s.is_stateful());
        let t = &s.triggers[0];
        assert_eq!(t.feeds, vec!["a", "b"]);
        assert_eq!(
            t.retry,
            Retry {
                steps: 3,
                duration_ms: 2000,
                factor: 2.0,
                jitter: 0.1
            }
        );
        assert_eq!(
            t.rate_limit,
            Some(RateLimit {
                per_unit: 5,
                unit_ms: 60_000
            })
        );
        assert_eq!(s.triggers[1].retry.duration_ms, 500);
        assert_eq!(
            s.triggers[1].type_parameters.as_ref().map(Vec::len),
            Some(1)
        );
        let f = s.dependencies[0].filters.as_ref().expect("filters");
        assert!(matches!(&f.data[0].values, DataValues::Number(v) if v == &[40.0, 41.0]));
        assert!(s.listens_to("w", "b") && !s.listens_to("w", "c"));
    }

    #[test]
    fn problems_name_their_paths() {
        let c = compile(&doc(json!({
            "dependencies": [{"name": "a", "eventSourceName": "w", "eventName": "a", "colour": "red",
                "filters": {"data": [{"path": "x", "type": "string", "value": ["("]},
                                     {"path": "y", "type": "bool", "value": ["yes"]}]}}],
            "triggers": [{"template": {"name": "t", "log": {}}, "rateLimit": {"unit": "Day", "requestsPerUnit": 1}}],
            "replicas": 2,
        })));
        assert!(c.sensor.is_none());
        let got: Vec<(String, Severity)> = c
            .problems
            .iter()
            .map(|p| (p.path.clone(), p.severity))
            .collect();
        for want in [
            ("spec.dependencies[0].colour", Severity::Warning),
            ("spec.replicas", Severity::Warning),
            (
                "spec.dependencies[0].filters.data[0].value[0]",
                Severity::Error,
            ),
            (
                "spec.dependencies[0].filters.data[1].value[0]",
                Severity::Error,
            ),
            ("spec.triggers[0].rateLimit.unit", Severity::Error),
        ] {
            assert!(
                got.contains(&(want.0.to_string(), want.1)),
                "{want:?} in {:#?}",
                c.problems
            );
        }
        // A wrong type is one error at its path.
        let c = compile(&doc(json!({"dependencies": [{"name": 7}]})));
        assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
        assert_eq!(c.problems[0].path, "spec.dependencies[0].name");
        assert!(c.problems[0].message.contains("expected a string"));
        let c = compile(&doc(
            json!({"dependencies": [{"name": "a", "eventSourceName": "w", "eventName": "a",
            "filters": {"data": [{"path": "x", "type": "string", "value": [{"no": 1}]}]}}]}),
        ));
        assert_eq!(
            c.problems[0].path,
            "spec.dependencies[0].filters.data[0].value[0]"
        );
        assert!(
            c.problems[0]
                .message
                .contains("expected a string, a number or a boolean"),
            "{:?}",
            c.problems
        );
    }
}
