//! What a SQLite `DATABASE_URL` means on disk. Operators write `sqlite://data.db`,
//! `sqlite:data.db` or `sqlite:///var/lib/switchboard/data.db` and expect the file to appear on
//! first start; SQLite itself creates it only with `?mode=rwc`, and otherwise fails with an
//! "unable to open database file" that names neither the file nor the reason.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context;
use sea_orm::sqlx::sqlite::SqliteConnectOptions;

/// Where a SQLite URL keeps its data, as the server will open it.
#[derive(Debug, PartialEq, Eq)]
pub struct SqliteTarget {
    /// The database file as the URL names it (relative paths are relative to the working
    /// directory); `None` for an in-memory database.
    pub file: Option<PathBuf>,
    /// Whether a missing file is created: yes, unless the URL picked a `mode` other than `rwc`
    /// (an explicit `mode=rw` or `mode=ro` is the operator's choice and is kept).
    pub create: bool,
}

/// Reads a `sqlite:` URL the way sqlx does, refusing one that names no file.
pub fn parse(url: &str) -> anyhow::Result<SqliteTarget> {
    let options = SqliteConnectOptions::from_str(url)
        .with_context(|| format!("DATABASE_URL `{url}` is not a valid SQLite URL"))?;
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (database, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mode = form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "mode")
        .map(|(_, value)| value.into_owned());
    if database == ":memory:" || mode.as_deref() == Some("memory") {
        return Ok(SqliteTarget {
            file: None,
            create: true,
        });
    }
    if database.is_empty() {
        anyhow::bail!(
            "DATABASE_URL `{url}` names no SQLite file: write sqlite://switchboard.db or \
             sqlite:///absolute/path/switchboard.db"
        );
    }
    Ok(SqliteTarget {
        file: Some(options.get_filename().to_path_buf()),
        create: mode.is_none_or(|m| m == "rwc"),
    })
}

/// Makes sure the file of `target` can be opened: its directory must exist, and a missing file
/// is created here, so a wrong path or a read-only directory fails with a message naming it.
pub fn prepare(target: &SqliteTarget) -> anyhow::Result<()> {
    let Some(file) = &target.file else {
        return Ok(());
    };
    let shown = std::path::absolute(file).unwrap_or_else(|_| file.clone());
    let directory = match shown.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !directory.is_dir() {
        anyhow::bail!(
            "cannot open the SQLite database {}: the directory {} does not exist \
             (create it, or point DATABASE_URL elsewhere)",
            shown.display(),
            directory.display()
        );
    }
    if target.create && !file.exists() {
        create_empty(file).with_context(|| {
            format!(
                "cannot create the SQLite database {}: the directory {} must be writable",
                shown.display(),
                directory.display()
            )
        })?;
    }
    Ok(())
}

/// An empty file is a valid new SQLite database. Opening without truncation leaves a file
/// another process created a moment ago untouched.
fn create_empty(file: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(file)
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(url: &str) -> SqliteTarget {
        parse(url).unwrap_or_else(|e| panic!("{url}: {e:#}"))
    }

    fn on_disk(path: &str, create: bool) -> SqliteTarget {
        SqliteTarget {
            file: Some(PathBuf::from(path)),
            create,
        }
    }

    #[test]
    fn relative_forms_name_a_file_in_the_working_directory_and_create_it() {
        assert_eq!(file("sqlite://rel.db"), on_disk("rel.db", true));
        assert_eq!(file("sqlite:rel.db"), on_disk("rel.db", true));
        assert_eq!(file("sqlite://data/rel.db"), on_disk("data/rel.db", true));
        assert_eq!(file("sqlite://rel.db?mode=rwc"), on_disk("rel.db", true));
    }

    #[test]
    fn absolute_forms_name_the_absolute_path() {
        assert_eq!(
            file("sqlite:///var/lib/switchboard/data.db"),
            on_disk("/var/lib/switchboard/data.db", true)
        );
        assert_eq!(
            file("sqlite:/var/lib/switchboard/data.db"),
            on_disk("/var/lib/switchboard/data.db", true)
        );
    }

    #[test]
    fn an_explicit_mode_other_than_rwc_is_kept() {
        assert_eq!(file("sqlite://rel.db?mode=rw"), on_disk("rel.db", false));
        assert_eq!(file("sqlite://rel.db?mode=ro"), on_disk("rel.db", false));
    }

    #[test]
    fn in_memory_databases_have_no_file() {
        for url in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite://?mode=memory",
        ] {
            assert_eq!(file(url).file, None, "{url}");
        }
    }

    #[test]
    fn a_url_without_a_file_or_with_unknown_options_is_refused() {
        assert!(parse("sqlite://").is_err());
        assert!(parse("sqlite://rel.db?mode=bogus").is_err());
        assert!(parse("sqlite://rel.db?colour=blue").is_err());
    }
}
