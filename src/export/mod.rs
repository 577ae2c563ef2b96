//! `trawl export KIND`: crawl results streamed from PostgreSQL as JSONL or CSV, or (`trawl export
//! instaloader`) the directory tree Instaloader writes ([`instaloader`]).
//!
//! Straight from the database rather than through the scheduler API, because an export can be
//! millions of rows: each row is written as it arrives, so memory stays flat whatever the size.
//! Rows come in primary-key order, so the same data always exports byte for byte the same. The
//! queries belong to `trawl_shared::results`; this module only formats what they return.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use futures_util::TryStreamExt;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use trawl_shared::config::Config;
use trawl_shared::db;
use trawl_shared::duration::HumanDuration;
use trawl_shared::results::{ColumnType, ExportTable, Kind, export_rows};

use crate::cli::{ExportArgs, ExportFormat, ExportKind};
use crate::client::CliError;

pub mod instaloader;

/// The table a kind reads; `None` for `instaloader`, which is not a table.
fn table_kind(kind: ExportKind) -> Option<Kind> {
    Some(match kind {
        ExportKind::Users => Kind::Users,
        ExportKind::Posts => Kind::Posts,
        ExportKind::Comments => Kind::Comments,
        ExportKind::Follows => Kind::Follows,
        ExportKind::Stories => Kind::Stories,
        ExportKind::HashtagPosts => Kind::HashtagPosts,
        ExportKind::Instaloader => return None,
        ExportKind::V1Users => Kind::V1Users,
        ExportKind::V1Posts => Kind::V1Posts,
        ExportKind::V1Comments => Kind::V1Comments,
        ExportKind::V1Follows => Kind::V1Follows,
        ExportKind::V1Stories => Kind::V1Stories,
        ExportKind::V1Notifications => Kind::V1Notifications,
        ExportKind::V1Hashtags => Kind::V1Hashtags,
        ExportKind::V1Locations => Kind::V1Locations,
    })
}

/// What `trawl export` was asked for, once its flags are known to fit together.
#[derive(Debug, PartialEq)]
enum Plan {
    Table {
        kind: Kind,
        format: ExportFormat,
        target: Option<String>,
    },
    Instaloader {
        output: PathBuf,
        targets: Vec<String>,
    },
}

/// Checks that the flags fit the kind: a table takes `--format` and at most one `--target`; the
/// Instaloader tree takes `--output DIR`, any number of `--target`s, and neither `--format` nor
/// `--since`.
fn plan(args: &ExportArgs) -> Result<Plan, CliError> {
    let Some(kind) = table_kind(args.kind) else {
        if args.format.is_some() {
            return Err(CliError::BadFlag {
                flag: "--format",
                reason: "`trawl export instaloader` writes Instaloader's own files and takes no \
                         format"
                    .into(),
            });
        }
        if args.since.is_some() {
            return Err(CliError::BadFlag {
                flag: "--since",
                reason: "`trawl export instaloader` writes every stored item of its profiles"
                    .into(),
            });
        }
        let output = match args.output.as_deref() {
            Some(dir) if dir != Path::new("-") => dir.to_path_buf(),
            _ => {
                return Err(CliError::BadFlag {
                    flag: "--output",
                    reason: "`trawl export instaloader` needs a directory to write the tree in \
                             (--output DIR)"
                        .into(),
                });
            }
        };
        let targets = args
            .target
            .iter()
            .map(|t| normalize_target(args.kind, t))
            .collect::<Result<_, _>>()?;
        return Ok(Plan::Instaloader { output, targets });
    };
    let Some(format) = args.format else {
        return Err(CliError::BadFlag {
            flag: "--format",
            reason: "required: jsonl or csv".into(),
        });
    };
    let target = match args.target.as_slice() {
        [] => None,
        [one] => Some(normalize_target(args.kind, one)?),
        _ => {
            return Err(CliError::BadFlag {
                flag: "--target",
                reason: "a table export takes one target (several only for `instaloader`)".into(),
            });
        }
    };
    Ok(Plan::Table {
        kind,
        format,
        target,
    })
}

pub async fn run(config: &Config, args: ExportArgs) -> Result<(), CliError> {
    let (kind, format, target) = match plan(&args)? {
        Plan::Instaloader { output, targets } => {
            return instaloader::run(config, &output, &targets).await;
        }
        Plan::Table {
            kind,
            format,
            target,
        } => (kind, format, target),
    };
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let pool = db::connect(&config.database).await?;
    let result = export(&pool, &args, kind, format, target, since).await;
    pool.close().await;
    // A reader that stopped early (`| head`) wanted no more rows: not a failure, and no summary
    // claiming rows reached it.
    let Some((count, destination)) = result? else {
        return Ok(());
    };
    let table = kind.table();
    let noun = if count == 1 {
        table.singular
    } else {
        table.plural
    };
    eprintln!("exported {count} {noun} to {destination}");
    Ok(())
}

/// The rows written and where, or `None` when standard output was closed early.
async fn export(
    pool: &PgPool,
    args: &ExportArgs,
    kind: Kind,
    format: ExportFormat,
    target: Option<String>,
    since: Option<Since>,
) -> Result<Option<(u64, String)>, CliError> {
    db::check_schema(pool).await?;
    let since = match since {
        None => None,
        Some(Since::At(t)) => Some(t),
        // The database clock, like every other time Trawl compares with last_seen_at.
        Some(Since::Ago(d)) => Some(
            sqlx::query_scalar::<_, DateTime<Utc>>("SELECT now() - make_interval(secs => $1)")
                .bind(d.as_secs_f64())
                .fetch_one(pool)
                .await
                .map_err(CliError::Database)?,
        ),
    };
    let mut out = Output::open(args.output.as_deref())?;
    let written = match write_rows(pool, kind, format, target, since, &mut out).await {
        Ok(count) => out.flush().map(|()| count),
        Err(Failed::Write(e)) => Err(e),
        Err(Failed::Read(message)) => {
            out.abandon();
            return Err(CliError::failed("cannot export", message));
        }
    };
    match written {
        Ok(count) => out.finish().map(|name| Some((count, name))),
        Err(e) if out.is_stdout() && e.kind() == io::ErrorKind::BrokenPipe => Ok(None),
        Err(e) => {
            out.abandon();
            Err(CliError::Write {
                destination: out.name(),
                source: e,
            })
        }
    }
}

enum Failed {
    Write(io::Error),
    Read(String),
}

impl From<io::Error> for Failed {
    fn from(e: io::Error) -> Self {
        Failed::Write(e)
    }
}

async fn write_rows(
    pool: &PgPool,
    kind: Kind,
    format: ExportFormat,
    target: Option<String>,
    since: Option<DateTime<Utc>>,
    out: &mut Output,
) -> Result<u64, Failed> {
    let table = kind.table();
    let w = &mut out.writer;
    if format == ExportFormat::Csv {
        for (i, (name, _)) in table.columns.iter().enumerate() {
            if i > 0 {
                w.write_all(b",")?;
            }
            csv_field(w, name)?;
        }
        w.write_all(b"\r\n")?;
    }
    let mut rows = std::pin::pin!(export_rows(pool, kind, target, since));
    let mut count = 0u64;
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(|e| Failed::Read(format!("database error while reading rows: {e}")))?
    {
        match format {
            ExportFormat::Jsonl => write_json_row(w, table, &row)?,
            ExportFormat::Csv => write_csv_row(w, table, &row)?,
        }
        count += 1;
    }
    Ok(count)
}

/// One column's value of one row.
enum Cell {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    Time(DateTime<Utc>),
    Json(String),
}

fn cell(row: &PgRow, name: &str, ty: ColumnType) -> Result<Cell, Failed> {
    let read = |e: sqlx::Error| Failed::Read(format!("cannot read column {name}: {e}"));
    let value = match ty {
        ColumnType::Int => row
            .try_get::<Option<i64>, _>(name)
            .map_err(read)?
            .map(Cell::Int),
        ColumnType::Bool => row
            .try_get::<Option<bool>, _>(name)
            .map_err(read)?
            .map(Cell::Bool),
        ColumnType::Text => row
            .try_get::<Option<String>, _>(name)
            .map_err(read)?
            .map(Cell::Text),
        ColumnType::Json => row
            .try_get::<Option<String>, _>(name)
            .map_err(read)?
            .map(Cell::Json),
        ColumnType::Time => row
            .try_get::<Option<DateTime<Utc>>, _>(name)
            .map_err(read)?
            .map(Cell::Time),
    };
    Ok(value.unwrap_or(Cell::Null))
}

fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn write_json_row(w: &mut impl Write, table: &ExportTable, row: &PgRow) -> Result<(), Failed> {
    w.write_all(b"{")?;
    for (i, &(name, ty)) in table.columns.iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        // Column names are plain identifiers: no escaping needed.
        write!(w, "\"{name}\":")?;
        match cell(row, name, ty)? {
            Cell::Null => w.write_all(b"null")?,
            Cell::Int(n) => write!(w, "{n}")?,
            Cell::Bool(b) => write!(w, "{b}")?,
            Cell::Text(s) => serde_json::to_writer(&mut *w, &s).map_err(io::Error::from)?,
            Cell::Time(t) => write!(w, "\"{}\"", rfc3339(&t))?,
            // PostgreSQL's text form of jsonb is one line (control characters in strings are
            // escaped), so it keeps the JSONL framing.
            Cell::Json(s) => w.write_all(s.as_bytes())?,
        }
    }
    w.write_all(b"}\n")?;
    Ok(())
}

fn write_csv_row(w: &mut impl Write, table: &ExportTable, row: &PgRow) -> Result<(), Failed> {
    for (i, &(name, ty)) in table.columns.iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        match cell(row, name, ty)? {
            Cell::Null => {}
            Cell::Int(n) => write!(w, "{n}")?,
            Cell::Bool(b) => write!(w, "{b}")?,
            Cell::Text(s) | Cell::Json(s) => csv_field(w, &s)?,
            Cell::Time(t) => w.write_all(rfc3339(&t).as_bytes())?,
        }
    }
    w.write_all(b"\r\n")?;
    Ok(())
}

/// One RFC 4180 field: quoted when it holds a comma, a quote or a line break, with quotes doubled.
fn csv_field(w: &mut impl Write, s: &str) -> io::Result<()> {
    if !s.contains([',', '"', '\n', '\r']) {
        return w.write_all(s.as_bytes());
    }
    w.write_all(b"\"")?;
    let mut parts = s.split('"');
    if let Some(first) = parts.next() {
        w.write_all(first.as_bytes())?;
    }
    for part in parts {
        w.write_all(b"\"\"")?;
        w.write_all(part.as_bytes())?;
    }
    w.write_all(b"\"")
}

/// Where rows go: standard output, or a file written beside its final name and renamed into
/// place once complete, so a failed export never leaves a truncated file that looks whole.
struct Output {
    writer: BufWriter<Box<dyn Write + Send>>,
    file: Option<(PathBuf, PathBuf)>,
}

impl Output {
    fn open(path: Option<&Path>) -> Result<Self, CliError> {
        let Some(path) = path.filter(|p| *p != Path::new("-")) else {
            return Ok(Self {
                writer: BufWriter::with_capacity(64 * 1024, Box::new(io::stdout())),
                file: None,
            });
        };
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = File::create(&partial).map_err(|source| CliError::CannotCreate {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            writer: BufWriter::with_capacity(64 * 1024, Box::new(file)),
            file: Some((partial, path.to_owned())),
        })
    }

    fn is_stdout(&self) -> bool {
        self.file.is_none()
    }

    fn name(&self) -> String {
        match &self.file {
            Some((_, path)) => path.display().to_string(),
            None => "stdout".to_owned(),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }

    /// Moves a complete file into place; its name, or `stdout`.
    fn finish(self) -> Result<String, CliError> {
        let name = self.name();
        if let Some((partial, path)) = &self.file
            && let Err(e) = std::fs::rename(partial, path)
        {
            let _ = std::fs::remove_file(partial);
            return Err(CliError::Write {
                destination: name,
                source: e,
            });
        }
        Ok(name)
    }

    /// Drops what was written of a file that will not be complete.
    fn abandon(&mut self) {
        if let Some((partial, _)) = &self.file {
            let _ = std::fs::remove_file(partial);
        }
    }
}

/// `--since`: a point in time, or a span back from the database's now.
#[derive(Debug, PartialEq)]
enum Since {
    At(DateTime<Utc>),
    Ago(std::time::Duration),
}

fn parse_since(s: &str) -> Result<Since, CliError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(Since::At(t.with_timezone(&Utc)));
    }
    if let Ok(day) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        && let Some(midnight) = day.and_hms_opt(0, 0, 0)
    {
        return Ok(Since::At(midnight.and_utc()));
    }
    s.parse::<HumanDuration>()
        .map(|d| Since::Ago(d.0))
        .map_err(|e| CliError::BadFlag {
            flag: "--since",
            reason: format!(
                "{s:?} is neither an RFC 3339 time (2026-12-01T08:00:00Z) nor a span back \
                     from now (24h, 7d): {e}"
            ),
        })
}

/// The target as results store it: usernames without `@` and lower-cased (Instagram usernames
/// are), hashtags without `#` and lower-cased (as jobs store them), shortcodes and v1 ids as given.
fn normalize_target(kind: ExportKind, raw: &str) -> Result<String, CliError> {
    let raw = raw.trim();
    let target = match kind {
        ExportKind::Users
        | ExportKind::Posts
        | ExportKind::Follows
        | ExportKind::Stories
        | ExportKind::Instaloader => raw.strip_prefix('@').unwrap_or(raw).to_ascii_lowercase(),
        ExportKind::HashtagPosts => raw.strip_prefix('#').unwrap_or(raw).to_lowercase(),
        // v1 ids are the API's, as given.
        ExportKind::Comments
        | ExportKind::V1Users
        | ExportKind::V1Posts
        | ExportKind::V1Comments
        | ExportKind::V1Follows
        | ExportKind::V1Stories
        | ExportKind::V1Notifications
        | ExportKind::V1Hashtags
        | ExportKind::V1Locations => raw.to_owned(),
    };
    if target.is_empty() {
        return Err(CliError::BadFlag {
            flag: "--target",
            reason: "must not be empty".into(),
        });
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(s: &str) -> String {
        let mut out = Vec::new();
        csv_field(&mut out, s).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv("plain text"), "plain text");
        assert_eq!(csv(""), "");
        assert_eq!(csv("a,b"), "\"a,b\"");
        assert_eq!(csv("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv("\""), "\"\"\"\"");
        assert_eq!(csv("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv("cr\r"), "\"cr\r\"");
    }

    #[test]
    fn since_takes_a_time_a_date_or_a_span() {
        assert_eq!(
            parse_since("2026-01-02T03:04:05+01:00").unwrap(),
            Since::At("2026-01-02T02:04:05Z".parse().unwrap())
        );
        assert_eq!(
            parse_since("2026-01-02").unwrap(),
            Since::At("2026-01-02T00:00:00Z".parse().unwrap())
        );
        assert_eq!(
            parse_since("7d").unwrap(),
            Since::Ago(std::time::Duration::from_secs(7 * 86_400))
        );
        let err = parse_since("last tuesday").unwrap_err().to_string();
        assert!(err.contains("--since") && err.contains("RFC 3339"), "{err}");
    }

    fn args(kind: ExportKind) -> ExportArgs {
        ExportArgs {
            kind,
            target: Vec::new(),
            since: None,
            format: None,
            output: None,
        }
    }

    #[test]
    fn each_kind_takes_the_flags_that_fit_it() {
        let table = ExportArgs {
            format: Some(ExportFormat::Jsonl),
            target: vec!["@Ada".into()],
            ..args(ExportKind::Posts)
        };
        assert_eq!(
            plan(&table).unwrap(),
            Plan::Table {
                kind: Kind::Posts,
                format: ExportFormat::Jsonl,
                target: Some("ada".into())
            }
        );
        let flag = |a: &ExportArgs| match plan(a) {
            Err(CliError::BadFlag { flag, .. }) => flag,
            other => panic!("{other:?}"),
        };
        assert_eq!(flag(&args(ExportKind::Posts)), "--format");
        let two = ExportArgs {
            target: vec!["a".into(), "b".into()],
            ..table
        };
        assert_eq!(flag(&two), "--target");

        let tree = ExportArgs {
            output: Some("out".into()),
            target: vec!["@Ada".into(), "bob".into()],
            ..args(ExportKind::Instaloader)
        };
        assert_eq!(
            plan(&tree).unwrap(),
            Plan::Instaloader {
                output: "out".into(),
                targets: vec!["ada".into(), "bob".into()]
            }
        );
        assert_eq!(flag(&args(ExportKind::Instaloader)), "--output");
        let formatted = ExportArgs {
            format: Some(ExportFormat::Csv),
            ..tree
        };
        assert_eq!(flag(&formatted), "--format");
        let since = ExportArgs {
            format: None,
            since: Some("7d".into()),
            ..formatted
        };
        assert_eq!(flag(&since), "--since");
    }

    #[test]
    fn targets_are_normalized_like_stored_results() {
        assert_eq!(
            normalize_target(ExportKind::Posts, "@NatGeo").unwrap(),
            "natgeo"
        );
        assert_eq!(
            normalize_target(ExportKind::HashtagPosts, "#Sunset").unwrap(),
            "sunset"
        );
        assert_eq!(
            normalize_target(ExportKind::Comments, "CxYz_-1").unwrap(),
            "CxYz_-1"
        );
        assert!(normalize_target(ExportKind::Users, "@").is_err());
    }
}
