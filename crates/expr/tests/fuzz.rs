//! Property tests over hostile input: any text given to the expression parsers, the
//! evaluator, `depends` and `{{...}}` rendering gives an answer or an error, never a panic
//! or a stack overflow. 3,000 cases per property (`PROPTEST_CASES` raises it).

use proptest::prelude::*;
use riposte_expr::{Dialect, eval, eval_when, parse, parse_depends, segments};
use serde_json::json;

const EXPR_TOKENS: &str = r#"( |\(|\)|\[|\]|\{|\}|,|\.|\?|:|!|&&|\|\||==|!=|<=|>=|<|>|\+|-|\*|/|%|\*\*|in|not|matches|contains|startsWith|'[a-z]{0,3}'|"[a-z]{0,3}"|[0-9]{1,3}|[0-9]\.[0-9]|[a-z]{1,6}|true|false|nil|#|map|filter|len|asInt|jsonpath|sprig\.[a-z]{1,6}|=~|\$)"#;

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(3000),
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn expressions_parse_and_evaluate_or_fail_cleanly(
        toks in proptest::collection::vec(EXPR_TOKENS, 0..40),
    ) {
        let src = toks.join(" ");
        let env = json!({"inputs": {"parameters": {"a": "1"}}, "items": [1, 2, 3], "x": "abc"});
        for dialect in [Dialect::Expr, Dialect::Govaluate] {
            if let Ok(ast) = parse(&src, dialect) {
                let _ = eval(&ast, &env);
            }
        }
        let _ = eval_when(&src);
    }

    #[test]
    fn any_text_parses_or_fails_cleanly(src in "(?s).{0,200}") {
        let _ = parse(&src, Dialect::Expr);
        let _ = parse(&src, Dialect::Govaluate);
        let _ = parse_depends(&src);
        let _ = segments(&src);
    }

    #[test]
    fn depends_parse_or_fail_cleanly(
        toks in proptest::collection::vec(r"( |\(|\)|&&|\|\||!|[A-Za-z]{1,4}|\.|Succeeded|Failed|Errored|Skipped|Omitted|Daemoned|AnySucceeded|AllFailed)", 0..40),
    ) {
        let _ = parse_depends(&toks.join(""));
    }
}

/// Deep nesting is refused with an error, not a stack overflow (which would abort the whole
/// controller, not just fail one workflow).
#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    for depth in [100, 10_000, 200_000] {
        let src = format!("{}1{}", "(".repeat(depth), ")".repeat(depth));
        let _ = parse(&src, Dialect::Expr);
        let _ = parse(&src, Dialect::Govaluate);
        let _ = parse_depends(&format!("{}a{}", "(".repeat(depth), ")".repeat(depth)));
        let unary = format!("{}true", "!".repeat(depth));
        let _ = parse(&unary, Dialect::Expr);
        let _ = parse_depends(&format!("{}a", "!".repeat(depth)));
        let list = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let _ = parse(&list, Dialect::Expr);
    }
    let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(
        parse(&deep, Dialect::Expr).is_err(),
        "too deep must be an error"
    );
}
