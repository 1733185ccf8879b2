//! Shared by the tests that run the real `sluice` binary. Each test uses part of it.
#![allow(dead_code)]

#[cfg(unix)]
pub mod process;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `sluice serve` on a free loopback port; returns the child and its address,
/// read from the line it prints once it listens.
pub fn start_server(config: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("spawn: {error}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(line.contains("listening on"), "{line}");
    let address = line
        .trim()
        .rsplit("http://")
        .next()
        .unwrap_or_default()
        .to_owned();
    (child, address)
}
