//! A shim compatible with the `argoproj/argosay` image, which Argo's examples use:
//! `echo [msg [file]]`, no arguments (`hello argo`), `cat FILE...`, `sleep DURATION`,
//! `exit [CODE]`, `assert_contains FILE TEXT`, `assert_exists FILE`; and `cowsay`, which the
//! `argoproj/argosay:v1` image (and Argo's older examples) call.

use std::io::Write;
use std::process::ExitCode;

pub fn main(args: &[String]) -> ExitCode {
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("argosay: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let args = if args.is_empty() { vec!["echo"] } else { args };
    match args.as_slice() {
        ["echo"] => println!("hello argo"),
        ["echo", msg] => println!("{msg}"),
        ["echo", msg, file] => {
            if let Some(dir) = std::path::Path::new(file).parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            }
            std::fs::write(file, msg).map_err(|e| format!("writing {file}: {e}"))?;
        }
        ["cat", files @ ..] => {
            let mut out = std::io::stdout().lock();
            for f in files {
                let data = std::fs::read(f).map_err(|e| format!("reading {f}: {e}"))?;
                out.write_all(&data).map_err(|e| e.to_string())?;
            }
        }
        ["sleep", d] => {
            let ms = expr::time::parse_duration_millis(d)
                .ok_or_else(|| format!("invalid duration {d:?}"))?;
            std::thread::sleep(std::time::Duration::from_millis(ms.max(0) as u64));
        }
        ["exit"] => return Ok(ExitCode::from(0)),
        ["exit", code] => {
            let c: u8 = code
                .parse()
                .map_err(|_| format!("invalid exit code {code:?}"))?;
            return Ok(ExitCode::from(c));
        }
        ["assert_contains", file, text] => {
            let data = std::fs::read_to_string(file).map_err(|e| format!("reading {file}: {e}"))?;
            if !data.contains(text) {
                return Err(format!("{file} does not contain {text:?}"));
            }
        }
        ["assert_exists", file] => {
            if !std::path::Path::new(file).exists() {
                return Err(format!("{file} does not exist"));
            }
        }
        other => {
            return Err(format!(
                "usage: argosay [echo [MSG [FILE]] | cat FILE... | sleep DURATION | exit [CODE] | assert_contains FILE TEXT | assert_exists FILE], got {other:?}"
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `cowsay MESSAGE...`: the message in a speech bubble above a cow.
pub fn cowsay(args: &[String]) -> ExitCode {
    let msg = args.join(" ");
    let width = msg.chars().count();
    println!(" {}", "_".repeat(width + 2));
    println!("< {msg} >");
    println!(" {}", "-".repeat(width + 2));
    println!("        \\   ^__^");
    println!("         \\  (oo)\\_______");
    println!("            (__)\\       )\\/\\");
    println!("                ||----w |");
    println!("                ||     ||");
    ExitCode::SUCCESS
}
