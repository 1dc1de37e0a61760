// A user-code operator in Rust: a compiled binary that speaks the protocol itself.
// Build:  rustc -O -o transfer_counter seeds/operators/transfer_counter.rs
//   jobs[].operator: user, language: rust, entry_point: seeds/operators/transfer_counter
// It reads one {"type":"task",...} line on stdin and writes JSON lines on stdout. A real operator
// would use serde_json; this example sticks to the standard library so it builds anywhere.
use std::io::{self, BufRead, Write};

fn field<'a>(json: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("\"{}\":", name);
    let at = json.find(&key)? + key.len();
    let rest = json[at..].trim_start();
    let rest = rest.strip_prefix('"').unwrap_or(rest);
    let end = rest.find(|c: char| c == '"' || c == ',' || c == '}')?;
    Some(&rest[..end])
}

fn main() {
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line).expect("read task");
    let out = io::stdout();
    let mut out = out.lock();
    match (field(&line, "start"), field(&line, "end"), field(&line, "id")) {
        (Some(start), Some(end), Some(id)) => {
            writeln!(out, "{{\"type\":\"log\",\"message\":\"counting transfers in blocks {}..{}\"}}", start, end).unwrap();
            writeln!(out, "{{\"type\":\"event\",\"event\":{{\"output\":0,\"kind\":\"data\",\"start\":\"{}\",\"end\":\"{}\",\"payload\":{{\"source_event\":\"{}\"}}}}}}", start, end, id).unwrap();
            writeln!(out, "{{\"type\":\"done\"}}").unwrap();
        }
        _ => {
            writeln!(out, "{{\"type\":\"error\",\"message\":\"expected an input event with start, end and id\"}}").unwrap();
            std::process::exit(1);
        }
    }
}
