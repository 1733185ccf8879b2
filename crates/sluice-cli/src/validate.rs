//! `sluice validate --config FILE`: checks a config without starting anything and
//! reports every problem it can find with its line: every syntax error, else the first
//! error of structure (an unknown key, a wrong type: deserialization stops there), else
//! every problem of meaning (`Config::problems`), every file the server would read
//! but cannot, and every projection script that does not compile.

use anyhow::{Context, Result};
use sluice_core::Config;
use std::path::Path;
use toml::de::{DeTable, DeValue};

/// One problem, as printed: `FILE:LINE: message`.
#[derive(Debug, PartialEq, Eq)]
pub struct Finding {
    pub line: Option<usize>,
    pub message: String,
}

/// Prints every problem of the config at `path`; `Ok(false)` when there is any.
pub fn run(path: &Path) -> Result<bool> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    let config_dir = path.parent().unwrap_or(Path::new("."));
    let findings = check(&text, config_dir);
    for finding in &findings {
        match finding.line {
            Some(line) => println!("{}:{line}: {}", path.display(), finding.message),
            None => println!("{}: {}", path.display(), finding.message),
        }
    }
    if findings.is_empty() {
        println!("{}: ok", path.display());
    }
    Ok(findings.is_empty())
}

/// Every problem of a config's text; files are looked up relative to `config_dir`.
pub fn check(text: &str, config_dir: &Path) -> Vec<Finding> {
    let (document, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        return syntax
            .iter()
            .map(|error| Finding {
                line: error.span().map(|span| line_of(text, span.start)),
                message: error.message().trim().to_owned(),
            })
            .collect();
    }
    let config: Config = match toml::from_str(text) {
        Ok(config) => config,
        Err(error) => {
            return vec![Finding {
                line: error.span().map(|span| line_of(text, span.start)),
                message: error.message().trim().to_owned(),
            }];
        }
    };
    let mut findings: Vec<Finding> = config
        .problems()
        .into_iter()
        .map(|problem| Finding {
            line: locate(document.get_ref(), &problem.at).map(|at| line_of(text, at)),
            message: problem.message,
        })
        .collect();
    let mut needs_file = |at: &str, file: &Path, what: &str| {
        let path = config_dir.join(file);
        if !path.is_file() {
            findings.push(Finding {
                line: locate(document.get_ref(), at).map(|at| line_of(text, at)),
                message: format!("{what} {} does not exist", path.display()),
            });
        }
    };
    if let Some(tls) = &config.server.tls {
        needs_file("server.tls.cert", &tls.cert, "the TLS certificate");
        needs_file("server.tls.key", &tls.key, "the TLS key");
    }
    if let Some(file) = &config.server.admin_token_file {
        needs_file("server.admin_token_file", file, "the admin token file");
    }
    for (index, projection) in config.projections.iter().enumerate() {
        if let Err(message) = sluice_projections::check_script(projection, config_dir) {
            findings.push(Finding {
                line: locate(document.get_ref(), &format!("projections[{index}].script"))
                    .map(|at| line_of(text, at)),
                message,
            });
        }
    }
    // In the file's order; problems without a line last.
    findings.sort_by_key(|finding| finding.line.unwrap_or(usize::MAX));
    findings
}

/// The 1-based line of byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|byte| **byte == b'\n')
        .count()
        + 1
}

/// The byte offset of the deepest part of `at` (`collections[1].key`) the document has.
fn locate(document: &DeTable<'_>, at: &str) -> Option<usize> {
    let mut table = document;
    let mut found = None;
    for part in at.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((name, index)) => (name, index.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let (key, value) = table
            .iter()
            .find(|(key, _)| key.get_ref().as_ref() == name)?;
        found = Some(key.span().start);
        let value = match (value.get_ref(), index) {
            (DeValue::Array(items), Some(index)) => {
                let item = items.get(index)?;
                found = Some(item.span().start);
                item.get_ref()
            }
            (value, _) => value,
        };
        match value {
            DeValue::Table(inner) => table = inner,
            _ => break,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<(Option<usize>, String)> {
        check(text, Path::new("/nonexistent"))
            .into_iter()
            .map(|finding| (finding.line, finding.message))
            .collect()
    }

    #[test]
    fn a_valid_config_has_no_findings() {
        let text = "[[collections]]\nname = \"doctor\"\nkey = [\"/doctor_id\"]\n";
        assert_eq!(lines(text), []);
    }

    #[test]
    fn every_syntax_error_is_reported_with_its_line() {
        let found =
            lines("[engine]\npartitions = \n[[collections]]\nname = \"doctor\nkey = [\"/id\"]\n");
        assert!(found.len() >= 2, "{found:?}");
        assert_eq!(found[0].0, Some(2), "{found:?}");
    }

    #[test]
    fn an_unknown_key_is_reported_with_its_line() {
        let found = lines("[[collections]]\nname = \"doctor\"\nkey = [\"/doctor_id\"]\nkye = 1\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, Some(4), "{found:?}");
        assert!(found[0].1.contains("kye"), "{found:?}");
    }

    #[test]
    fn every_problem_of_meaning_is_reported_with_its_line() {
        let text = "[engine]\npartitions = 0\n\
                    [[collections]]\nname = \"doctor\"\nkey = [\"/doctor_id\"]\n\
                    [[collections]]\nname = \"bad name\"\nkey = [\"no-slash\"]\n\
                    [[collections]]\nname = \"doctor\"\nkey = [\"/id\"]\n\
                    [server]\nadmin_token_file = \"missing.token\"\n";
        let found = lines(text);
        let at: Vec<Option<usize>> = found.iter().map(|(line, _)| *line).collect();
        assert_eq!(
            at,
            [Some(2), Some(7), Some(8), Some(10), Some(13)],
            "{found:?}"
        );
        assert!(found[3].1.contains("defined twice"), "{found:?}");
        assert!(found[4].1.contains("missing.token"), "{found:?}");
    }

    #[test]
    fn projections_are_checked_down_to_their_scripts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("bad.js"),
            "export default function (d) {\n  return {key: d.id,, value: 1};\n}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("good.js"),
            "export default function (d) { return null; }\n",
        )
        .unwrap();
        let text = "[[collections]]\nname = \"doctor\"\nkey = [\"/doctor_id\"]\n\
                    [[projections]]\nname = \"good\"\nsource = \"doctor\"\nscript = \"good.js\"\n\
                    [[projections]]\nname = \"bad\"\nsource = \"doctor\"\nscript = \"bad.js\"\n\
                    [[projections]]\nname = \"gone\"\nsource = \"doctor\"\nscript = \"gone.js\"\n\
                    [[projections]]\nname = \"fast\"\nsource = \"doctor\"\nscript = \"native:nope\"\n\
                    [[projections]]\nname = \"lost\"\nsource = \"nurse\"\nscript = \"native:doctor_profile\"\n";
        let found: Vec<(Option<usize>, String)> = check(text, dir.path())
            .into_iter()
            .map(|finding| (finding.line, finding.message))
            .collect();
        let at: Vec<Option<usize>> = found.iter().map(|(line, _)| *line).collect();
        assert_eq!(at, [Some(11), Some(15), Some(19), Some(22)], "{found:?}");
        assert!(found[0].1.contains("bad.js:2:"), "{found:?}");
        assert!(found[1].1.contains("gone.js"), "{found:?}");
        assert!(
            found[2].1.contains("no native projector \"nope\""),
            "{found:?}"
        );
        assert!(
            found[3].1.contains("unknown source collection \"nurse\""),
            "{found:?}"
        );
    }
}
