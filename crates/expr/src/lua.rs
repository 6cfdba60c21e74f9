//! Argo Events' Lua scripts: a dependency's `filters.script` (returns a boolean) and
//! `transform.script` (returns the new event data), with `event` set to the event's data.
//!
//! Each run gets a fresh interpreter with only the `string`, `table`, `math` and `utf8`
//! libraries (no `os`, `io` or `require`: the sensor core does no IO and reads no clock),
//! at most [`MAX_INSTRUCTIONS`] instructions and [`MAX_MEMORY`] bytes, so a runaway script
//! is an error with a reason, not a stuck sensor. The sensor core calls it; lint calls
//! [`check`].

use mlua::{HookTriggers, Lua, LuaOptions, LuaSerdeExt, StdLib, VmState};
use serde_json::Value;

/// How many Lua instructions one script may run.
pub const MAX_INSTRUCTIONS: u64 = 5_000_000;
/// How much memory one interpreter may allocate.
pub const MAX_MEMORY: usize = 32 * 1024 * 1024;
const HOOK_EVERY: u32 = 10_000;

fn interpreter(data: &Value) -> Result<Lua, String> {
    let lua = Lua::new_with(
        StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8,
        LuaOptions::default(),
    )
    .map_err(|e| format!("starting Lua: {e}"))?;
    lua.set_memory_limit(MAX_MEMORY)
        .map_err(|e| format!("limiting Lua's memory: {e}"))?;
    let ran = std::sync::atomic::AtomicU64::new(0);
    lua.set_hook(
        HookTriggers::new().every_nth_instruction(HOOK_EVERY),
        move |_, _| {
            let total = ran.fetch_add(u64::from(HOOK_EVERY), std::sync::atomic::Ordering::Relaxed);
            if total >= MAX_INSTRUCTIONS {
                Err(mlua::Error::runtime(format!(
                    "the script ran more than {MAX_INSTRUCTIONS} instructions"
                )))
            } else {
                Ok(VmState::Continue)
            }
        },
    );
    // JSON null is Lua's nil (as Argo's gopher-lua bridge has it), so `x == nil` tests work.
    let options = mlua::SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let event = lua
        .to_value_with(data, options)
        .map_err(|e| format!("passing the event to Lua: {e}"))?;
    lua.globals()
        .set("event", event)
        .map_err(|e| format!("passing the event to Lua: {e}"))?;
    Ok(lua)
}

fn run(script: &str, data: &Value) -> Result<(Lua, mlua::Value), String> {
    let lua = interpreter(data)?;
    let result = lua
        .load(script)
        .set_name("=script")
        .eval::<mlua::Value>()
        .map_err(|e| format!("the script failed: {}", first_line(&e.to_string())))?;
    Ok((lua, result))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

/// `filters.script`: whether the event passes. The script must return a boolean.
pub fn filter(script: &str, data: &Value) -> Result<bool, String> {
    let (_lua, result) = run(script, data)?;
    match result {
        mlua::Value::Boolean(b) => Ok(b),
        other => Err(format!(
            "the script returned {} where a boolean was expected",
            other.type_name()
        )),
    }
}

/// `transform.script`: the event data the script returns (a table).
pub fn transform(script: &str, data: &Value) -> Result<Value, String> {
    let (lua, result) = run(script, data)?;
    if !matches!(result, mlua::Value::Table(_)) {
        return Err(format!(
            "the script returned {} where the event (a table) was expected",
            result.type_name()
        ));
    }
    lua.from_value::<Value>(result)
        .map_err(|e| format!("reading the script's event: {e}"))
}

/// A Lua script whose syntax was checked once (a sensor's `filters.script` or
/// `transform.script`). Each run still gets a fresh, limited interpreter: scripts share no
/// state between events.
#[derive(Debug, Clone, PartialEq)]
pub struct Script(String);

impl Script {
    pub fn compile(source: &str) -> Result<Script, String> {
        check(source)?;
        Ok(Script(source.to_string()))
    }
    pub fn source(&self) -> &str {
        &self.0
    }
    /// See [`filter`].
    pub fn filter(&self, data: &Value) -> Result<bool, String> {
        filter(&self.0, data)
    }
    /// See [`transform`].
    pub fn transform(&self, data: &Value) -> Result<Value, String> {
        transform(&self.0, data)
    }
}

/// Whether `script` compiles (for lint), with Lua's message when it does not.
pub fn check(script: &str) -> Result<(), String> {
    let lua = Lua::new_with(StdLib::NONE, LuaOptions::default())
        .map_err(|e| format!("starting Lua: {e}"))?;
    lua.load(script)
        .set_name("=script")
        .into_function()
        .map(|_| ())
        .map_err(|e| first_line(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Argo's own examples (filter-script.yaml, transform.yaml) and the limits.
    #[test]
    fn argo_examples_limits_and_errors() {
        let data =
            json!({"header": {}, "body": {"a": "b", "d": {"e": "z"}, "n": null, "list": [1, 2]}});
        let argo_filter = r#"if event.body.a == "b" and event.body.d.e == "z" then return true else return false end"#;
        assert_eq!(filter(argo_filter, &data), Ok(true));
        assert_eq!(
            filter(argo_filter, &json!({"body": {"a": "c", "d": {"e": "z"}}})),
            Ok(false)
        );
        assert_eq!(filter("return event.body.n == nil", &data), Ok(true));
        assert_eq!(filter("return #event.body.list == 2", &data), Ok(true));
        let out =
            transform("event.body.message='updated'\nreturn event", &data).expect("transform");
        assert_eq!(out["body"]["message"], "updated");
        assert_eq!(out["body"]["d"]["e"], "z");
        let returned_string = filter("return 'yes'", &data).expect_err("not a boolean");
        assert!(
            returned_string.contains("string where a boolean"),
            "{returned_string}"
        );
        let looping = filter("while true do end", &data).expect_err("runaway");
        assert!(looping.contains("instructions"), "{looping}");
        let io = filter("return os.time() > 0", &data).expect_err("no os library");
        assert!(io.contains("the script failed"), "{io}");
        assert!(
            transform("return 1", &data)
                .expect_err("number")
                .contains("where the event (a table) was expected")
        );
        assert!(check("if then").is_err());
        assert_eq!(check(argo_filter), Ok(()));
    }
}
