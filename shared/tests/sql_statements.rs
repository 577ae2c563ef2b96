//! Every SQL statement in the workspace's Rust sources, prepared against a freshly migrated
//! database: a statement naming a column or table the migrations do not create fails here, with
//! its file and line, instead of at run time on the one path that sends it. docs/adr/0008 says
//! why this test rather than sqlx's `query!` macros.
//!
//! It reads the sources as text, so it sees what it can prove is a whole statement:
//!
//! - a string literal (plain or raw) passed to `query`, `query_as`, `query_scalar`,
//!   `query_with`, `query_as_with`, `query_scalar_with` or `raw_sql`;
//! - such an argument built with `concat!` from literals and local `macro_rules!` that expand to
//!   one literal (`job_columns!()`), expanded here;
//! - any other string literal that starts like a statement (`SELECT `, `INSERT INTO `, `WITH `,
//!   ...): the constants and `match` arms a call site picks its statement from.
//!
//! A call site whose statement is built at run time (`format!`, a variable it cannot trace) is
//! listed, not checked, and so are statements PostgreSQL cannot prepare by design (several
//! statements in one string, DDL). The test prints both lists and fails if it prepared none.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use sqlx::{Executor, SqlSafeStr};
use trawl_shared::testing::fresh_db;

/// Functions whose first argument is the statement.
const CALLS: [&str; 7] = [
    "query",
    "query_as",
    "query_scalar",
    "query_with",
    "query_as_with",
    "query_scalar_with",
    "raw_sql",
];

/// How a statement-looking literal starts. Upper case only: messages and docs say "select" in
/// prose, statements in this code base are written in capitals.
const STARTS: [&str; 7] = [
    "SELECT ",
    "INSERT INTO ",
    "UPDATE ",
    "DELETE FROM ",
    "WITH ",
    "SELECT\n",
    "WITH\n",
];

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Str(String),
    Ident(String),
    Punct(char),
}

#[derive(Debug, Clone)]
struct Spanned {
    token: Token,
    line: usize,
}

/// Splits Rust source into identifiers, punctuation and string literals (with escapes
/// resolved), dropping comments, whitespace, numbers, characters and lifetimes. Enough for
/// finding statements; not a Rust parser.
fn tokenize(src: &str) -> Vec<Spanned> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let count_lines = |from: usize, to: usize, chars: &[char]| {
        chars[from..to].iter().filter(|&&c| c == '\n').count()
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let start = i;
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            line += count_lines(start, i.min(chars.len()), &chars);
        } else if (c == 'r' || (c == 'b' && next == Some('r')))
            && raw_string_at(&chars, if c == 'b' { i + 1 } else { i }).is_some()
        {
            let at = if c == 'b' { i + 1 } else { i };
            let (value, end) = raw_string_at(&chars, at).unwrap_or_default();
            let start_line = line;
            line += count_lines(i, end, &chars);
            if c == 'r' {
                out.push(Spanned {
                    token: Token::Str(value),
                    line: start_line,
                });
            }
            i = end;
        } else if c == '"' || (c == 'b' && next == Some('"')) {
            let start = i;
            let start_line = line;
            i += if c == 'b' { 2 } else { 1 };
            let mut value = String::new();
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    match chars.get(i + 1) {
                        Some('\n') => {
                            // A line continuation: the newline and the next line's indent go.
                            i += 2;
                            while i < chars.len() && chars[i].is_whitespace() {
                                i += 1;
                            }
                            continue;
                        }
                        Some('n') => value.push('\n'),
                        Some('t') => value.push('\t'),
                        Some('r') => value.push('\r'),
                        Some('0') => value.push('\0'),
                        Some(&other) => value.push(other),
                        None => {}
                    }
                    i += 2;
                } else {
                    value.push(chars[i]);
                    i += 1;
                }
            }
            i += 1;
            line += count_lines(start, i.min(chars.len()), &chars);
            if c == '"' {
                out.push(Spanned {
                    token: Token::Str(value),
                    line: start_line,
                });
            }
        } else if c == '\'' {
            // A character literal ('x', '\n', '\'') or a lifetime ('a).
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Spanned {
                token: Token::Ident(chars[start..i].iter().collect()),
                line,
            });
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else {
            out.push(Spanned {
                token: Token::Punct(c),
                line,
            });
            i += 1;
        }
    }
    out
}

/// A raw string starting at `at` (`r"…"`, `r#"…"#`): its value and the index after it.
fn raw_string_at(chars: &[char], at: usize) -> Option<(String, usize)> {
    if chars.get(at) != Some(&'r') {
        return None;
    }
    let mut i = at + 1;
    let mut hashes = 0;
    while chars.get(i) == Some(&'#') {
        hashes += 1;
        i += 1;
    }
    if chars.get(i) != Some(&'"') {
        return None;
    }
    i += 1;
    let start = i;
    while i < chars.len() {
        if chars[i] == '"' && (0..hashes).all(|h| chars.get(i + 1 + h) == Some(&'#')) {
            return Some((chars[start..i].iter().collect(), i + 1 + hashes));
        }
        i += 1;
    }
    None
}

/// `macro_rules! name { () => { "literal" ... }; }` whose single arm is string literals only.
fn literal_macros(tokens: &[Spanned], into: &mut HashMap<String, String>) {
    for (i, t) in tokens.iter().enumerate() {
        if t.token != Token::Ident("macro_rules".into()) {
            continue;
        }
        let Some(Token::Ident(name)) = tokens.get(i + 2).map(|t| &t.token) else {
            continue;
        };
        let shape = [
            Token::Punct('{'),
            Token::Punct('('),
            Token::Punct(')'),
            Token::Punct('='),
            Token::Punct('>'),
            Token::Punct('{'),
        ];
        if tokens.len() < i + 9
            || tokens[i + 3..i + 9]
                .iter()
                .zip(&shape)
                .any(|(t, s)| t.token != *s)
        {
            continue;
        }
        let mut body = String::new();
        let mut j = i + 9;
        while let Some(Token::Str(s)) = tokens.get(j).map(|t| &t.token) {
            body.push_str(s);
            j += 1;
        }
        if !body.is_empty() && tokens.get(j).map(|t| &t.token) == Some(&Token::Punct('}')) {
            into.insert(name.clone(), body);
        }
    }
}

/// The tokens of a call's first argument: from after `(` up to its `,` or `)` at depth 0.
fn first_argument(tokens: &[Spanned], open: usize) -> &[Spanned] {
    let mut depth = 0;
    for (k, t) in tokens.iter().enumerate().skip(open + 1) {
        match t.token {
            Token::Punct('(' | '[' | '{') => depth += 1,
            Token::Punct(')' | ']' | '}') if depth == 0 => return &tokens[open + 1..k],
            Token::Punct(')' | ']' | '}') => depth -= 1,
            Token::Punct(',') if depth == 0 => return &tokens[open + 1..k],
            _ => {}
        }
    }
    &tokens[open + 1..]
}

/// A statement from an argument: a literal, possibly wrapped (`AssertSqlSafe(…)`, `&…`), or a
/// `concat!` of literals and literal macros.
fn resolve(arg: &[Spanned], macros: &HashMap<String, String>) -> Option<String> {
    let mut arg = arg;
    while let [first, rest @ ..] = arg {
        match &first.token {
            Token::Punct('&') => arg = rest,
            Token::Ident(w) if w == "sqlx" || w == "AssertSqlSafe" => arg = rest,
            Token::Punct(':') => arg = rest,
            Token::Punct('(') if arg.last().map(|t| &t.token) == Some(&Token::Punct(')')) => {
                arg = &rest[..rest.len() - 1];
            }
            _ => break,
        }
    }
    match arg {
        [
            Spanned {
                token: Token::Str(s),
                ..
            },
        ] => Some(s.clone()),
        [
            Spanned {
                token: Token::Ident(c),
                ..
            },
            Spanned {
                token: Token::Punct('!'),
                ..
            },
            Spanned {
                token: Token::Punct('('),
                ..
            },
            inner @ ..,
            Spanned {
                token: Token::Punct(')'),
                ..
            },
        ] if c == "concat" => {
            let mut out = String::new();
            let mut k = 0;
            while k < inner.len() {
                match (&inner[k].token, inner.get(k + 1).map(|t| &t.token)) {
                    (Token::Str(s), _) => {
                        out.push_str(s);
                        k += 1;
                    }
                    (Token::Ident(m), Some(Token::Punct('!'))) => {
                        out.push_str(macros.get(m)?);
                        // name ! ( )
                        k += 4;
                    }
                    (Token::Punct(','), _) => k += 1,
                    _ => return None,
                }
            }
            Some(out)
        }
        _ => None,
    }
}

fn looks_like_a_statement(s: &str) -> bool {
    let s = s.trim_start();
    STARTS.iter().any(|p| s.starts_with(p))
}

/// Where a statement was found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Site {
    file: String,
    line: usize,
}

impl std::fmt::Display for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

struct Found {
    statements: BTreeMap<String, Vec<Site>>,
    unresolved: Vec<(Site, String)>,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn scan(root: &Path) -> Found {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    files.sort();
    let this_file = Path::new(file!())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let mut tokenized = Vec::new();
    let mut macros = HashMap::new();
    for path in files {
        // This file holds example statements of its own.
        if path.file_name().map(|n| n.to_string_lossy().into_owned()) == this_file
            && path.parent().is_some_and(|p| p.ends_with("shared/tests"))
        {
            continue;
        }
        let Ok(src) = std::fs::read_to_string(&path) else {
            continue;
        };
        let tokens = tokenize(&src);
        literal_macros(&tokens, &mut macros);
        let shown = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        tokenized.push((shown, tokens));
    }
    let mut found = Found {
        statements: BTreeMap::new(),
        unresolved: Vec::new(),
    };
    for (file, tokens) in &tokenized {
        // Literals consumed by a call site or a concat!, so the literal sweep skips them.
        let mut used: BTreeSet<usize> = BTreeSet::new();
        for (i, t) in tokens.iter().enumerate() {
            let Token::Ident(name) = &t.token else {
                continue;
            };
            if !CALLS.contains(&name.as_str()) {
                continue;
            }
            // sqlx's functions are called by path (`sqlx::query(`) in this code base; a bare
            // `query(` or a `.query(` method is something else (a PromQL helper, reqwest).
            if i < 2
                || tokens[i - 1].token != Token::Punct(':')
                || tokens[i - 2].token != Token::Punct(':')
            {
                continue;
            }
            let mut open = i + 1;
            if tokens.get(open).map(|t| &t.token) == Some(&Token::Punct(':')) {
                // A turbofish: skip to its closing `>`.
                let mut depth = 0;
                while let Some(t) = tokens.get(open) {
                    match t.token {
                        Token::Punct('<') => depth += 1,
                        Token::Punct('>') => {
                            depth -= 1;
                            if depth == 0 {
                                open += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    open += 1;
                }
            }
            if tokens.get(open).map(|t| &t.token) != Some(&Token::Punct('(')) {
                continue;
            }
            let arg = first_argument(tokens, open);
            let site = Site {
                file: file.clone(),
                line: t.line,
            };
            if arg.is_empty() {
                continue;
            }
            match resolve(arg, &macros) {
                Some(sql) => {
                    found.statements.entry(sql).or_default().push(site);
                    let start = open + 1;
                    used.extend(start..start + arg.len());
                }
                None => {
                    let text: Vec<String> = arg
                        .iter()
                        .map(|t| match &t.token {
                            Token::Str(s) => format!("{s:?}"),
                            Token::Ident(s) => s.clone(),
                            Token::Punct(c) => c.to_string(),
                        })
                        .collect();
                    found.unresolved.push((site, text.join("")));
                }
            }
        }
        // The template of format!, println! and the like is not a statement: its placeholders
        // are filled at run time (the call site is listed when it sends the result).
        for (i, t) in tokens.iter().enumerate() {
            if let Token::Ident(name) = &t.token
                && name != "concat"
                && tokens.get(i + 1).map(|t| &t.token) == Some(&Token::Punct('!'))
                && tokens.get(i + 2).map(|t| &t.token) == Some(&Token::Punct('('))
                && matches!(tokens.get(i + 3).map(|t| &t.token), Some(Token::Str(_)))
            {
                used.insert(i + 3);
            }
        }
        // concat! arguments elsewhere are fragments, not statements.
        for (i, t) in tokens.iter().enumerate() {
            if t.token == Token::Ident("concat".into())
                && tokens.get(i + 1).map(|t| &t.token) == Some(&Token::Punct('!'))
            {
                let mut depth = 0;
                for (k, t) in tokens.iter().enumerate().skip(i + 3) {
                    match t.token {
                        Token::Punct('(') => depth += 1,
                        Token::Punct(')') if depth == 0 => break,
                        Token::Punct(')') => depth -= 1,
                        _ => {}
                    }
                    used.insert(k);
                }
            }
        }
        for (i, t) in tokens.iter().enumerate() {
            if let Token::Str(s) = &t.token
                && !used.contains(&i)
                && looks_like_a_statement(s)
            {
                found.statements.entry(s.clone()).or_default().push(Site {
                    file: file.clone(),
                    line: t.line,
                });
            }
        }
    }
    found
}

/// Schemas that are not Trawl's: statements on them are another system's business.
const FOREIGN_SCHEMAS: [(&str, &str); 1] = [(
    "apalis.",
    "the apalis comparison in bench/queue, which brings its own schema",
)];

/// Why PostgreSQL cannot prepare a statement that is nonetheless fine: several statements in one
/// string (sent with the simple protocol), or a statement on another system's schema.
fn not_preparable_by_design(sql: &str, error: &str) -> Option<&'static str> {
    if error.contains("cannot insert multiple commands into a prepared statement") {
        return Some("several statements in one string");
    }
    FOREIGN_SCHEMAS
        .iter()
        .find(|(schema, _)| sql.contains(schema))
        .map(|(_, why)| *why)
}

#[tokio::test]
async fn every_statement_in_the_sources_prepares_against_the_migrated_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("shared/ sits in the workspace");
    let found = scan(root);
    assert!(
        !found.statements.is_empty(),
        "found no SQL statement under {}: the scanner is broken",
        root.display()
    );
    let db = fresh_db().await;
    let mut conn = db.pool.acquire().await.expect("a connection");
    let mut prepared = 0;
    let mut by_design = Vec::new();
    let mut failures = Vec::new();
    for (sql, sites) in &found.statements {
        // The statements are the repository's own text, prepared and never executed.
        let statement = sqlx::AssertSqlSafe(sql.as_str()).into_sql_str();
        match (&mut *conn).prepare(statement).await {
            Ok(_) => prepared += 1,
            Err(e) => {
                let error = e.to_string();
                let where_ = sites
                    .iter()
                    .map(Site::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                match not_preparable_by_design(sql, &error) {
                    Some(why) => by_design.push(format!("{where_}: {why}")),
                    None => failures.push(format!(
                        "{where_}: {error}\n    {}",
                        sql.split_whitespace().collect::<Vec<_>>().join(" ")
                    )),
                }
            }
        }
    }
    println!(
        "prepared {prepared} of {} distinct statements found in the sources",
        found.statements.len()
    );
    if !by_design.is_empty() {
        println!(
            "not preparable by design ({}):\n  {}",
            by_design.len(),
            by_design.join("\n  ")
        );
    }
    if !found.unresolved.is_empty() {
        println!(
            "call sites that pass a statement built at run time or by name, not checked here \
             ({}; a named statement written as a literal elsewhere was prepared above):",
            found.unresolved.len()
        );
        for (site, arg) in &found.unresolved {
            println!("  {site}: {arg}");
        }
    }
    assert!(prepared > 0, "no statement prepared");
    assert!(
        failures.is_empty(),
        "{} statements do not match the migrated schema:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_scanner_reads_literals_raw_strings_and_concat() {
    let src = r####"
        macro_rules! cols { () => { "a, " "b" }; }
        fn f() {
            let c = '"';
            sqlx::query("SELECT 1 -- \"quoted\"");
            sqlx::query_as::<_, (i64,)>(r#"SELECT "x" FROM t"#);
            sqlx::query_scalar(concat!("SELECT ", cols!(), " FROM t"));
            sqlx::query(&format!("SELECT {}", 1));
            const S: &str = "UPDATE t SET a = 1";
        }
    "####;
    let tokens = tokenize(src);
    let mut macros = HashMap::new();
    literal_macros(&tokens, &mut macros);
    assert_eq!(macros.get("cols").map(String::as_str), Some("a, b"));
    let dir = std::env::temp_dir().join(format!("trawl-sql-scan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("sample.rs"), src).unwrap();
    let found = scan(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    let statements: Vec<&str> = found.statements.keys().map(String::as_str).collect();
    assert_eq!(
        statements,
        vec![
            "SELECT \"x\" FROM t",
            "SELECT 1 -- \"quoted\"",
            "SELECT a, b FROM t",
            "UPDATE t SET a = 1",
        ]
    );
    assert_eq!(found.unresolved.len(), 1);
    assert!(found.unresolved[0].1.starts_with("&format!"));
}
