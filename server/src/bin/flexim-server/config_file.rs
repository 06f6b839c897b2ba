//! The configuration file (`--config FILE`): TOML whose keys are the long flag names, so that
//! a setting has one name wherever it is given. The command line is parsed first, to learn
//! which settings the environment or the command line set; every other key of the file is
//! then given to the same parser as if it were a flag. So a value in the file is checked by
//! the flag's own parser, and the order is: the file, then the environment, then the flags.
//!
//! [`print`] writes the file `--print-config` gives: every setting with its help, its
//! environment variable and its default, commented out.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::Path;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use toml_edit::{Document, Item, Value};

/// Arguments that are not settings: the file never holds them.
const NOT_SETTINGS: [&str; 4] = ["config", "print-config", "help", "version"];

/// Why the file was not taken: one line, naming the file and the key.
#[derive(Debug)]
pub(crate) struct FileError(pub(crate) String);

/// `args` (the whole command line, program name first) with a flag added for each key of the
/// file at `path` that neither the environment nor the command line set, as `matches` (the
/// command line parsed alone) tells.
pub(crate) fn layered(
    cmd: &Command,
    matches: &ArgMatches,
    path: &Path,
    mut args: Vec<OsString>,
) -> Result<Vec<OsString>, FileError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| FileError(format!("cannot read the configuration file {name}: {e}")))?;
    let doc = Document::parse(text.as_str()).map_err(|e| {
        let line = e.span().map_or(0, |s| line_of(&text, s.start));
        FileError(format!("{name}: line {line}: {}", e.message().trim()))
    })?;
    let mut added = Vec::new();
    for (key, item) in doc.as_table().iter() {
        let line = doc
            .as_table()
            .get_key_value(key)
            .and_then(|(k, _)| k.span())
            .map_or(0, |s| line_of(&text, s.start));
        let at = |why: String| FileError(format!("{name}: line {line}: {why}"));
        let values = values_of(item).map_err(|why| at(format!("`{key}`: {why}")))?;
        let arg = setting(cmd, key).ok_or_else(|| {
            at(format!(
                "unknown setting `{key}` (`flexim-server --print-config` lists every setting)"
            ))
        })?;
        for value in &values {
            check(cmd, arg, key, value).map_err(|why| at(format!("`{key}`: {why}")))?;
        }
        // The environment and the command line come first.
        let from_default = matches!(
            matches.value_source(arg.get_id().as_str()),
            None | Some(ValueSource::DefaultValue)
        );
        if from_default {
            added.extend(flags_for(arg, key, &values));
        }
    }
    args.splice(1..1, added);
    Ok(args)
}

/// The setting a key names: an argument with that long name that is a setting.
fn setting<'a>(cmd: &'a Command, key: &str) -> Option<&'a Arg> {
    cmd.get_arguments()
        .find(|a| a.get_long() == Some(key) && !NOT_SETTINGS.contains(&key))
}

/// The 1-based line of byte `at` of `text`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// A key's value as the strings a flag would take: one for a number, a string or a boolean,
/// one per element for an array (a flag given several times).
fn values_of(item: &Item) -> Result<Vec<String>, String> {
    match item {
        Item::Value(Value::Array(array)) => array.iter().map(scalar).collect(),
        Item::Value(v) => Ok(vec![scalar(v)?]),
        Item::Table(_) | Item::ArrayOfTables(_) => {
            Err("is a table; every setting is `key = value` at the top of the file".into())
        }
        Item::None => Err("has no value".into()),
    }
}

/// One scalar of the file as a flag's value.
fn scalar(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.value().clone()),
        Value::Integer(i) => Ok(i.value().to_string()),
        Value::Float(f) => Ok(f.value().to_string()),
        Value::Boolean(b) => Ok(b.value().to_string()),
        Value::Datetime(_) => Err("a date is no value of any setting".into()),
        Value::Array(_) | Value::InlineTable(_) => Err("takes a number or a string".into()),
    }
}

/// Checks `value` with the flag's own parser (a parse of that flag alone), so that a bad
/// value is refused naming its key, not the flag it becomes. What the whole command line
/// checks (a flag that needs another) is left to the parse of it all.
fn check(cmd: &Command, arg: &Arg, key: &str, value: &str) -> Result<(), String> {
    if is_switch(arg) {
        return match value {
            "true" | "false" => Ok(()),
            _ => Err(format!("{value:?} is not true or false")),
        };
    }
    let mut probe = vec![OsString::from("flexim-server")];
    probe.extend(flags_for(arg, key, &[value.to_string()]));
    match cmd.clone().try_get_matches_from(probe) {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ValueValidation | ErrorKind::InvalidValue
            ) =>
        {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or_default();
            Err(first.trim_start_matches("error: ").to_string())
        }
        _ => Ok(()),
    }
}

/// Whether the argument is a switch (`--flag`, no value).
fn is_switch(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

/// The flags that give `values` to `arg`.
fn flags_for(arg: &Arg, key: &str, values: &[String]) -> Vec<OsString> {
    if is_switch(arg) {
        return match values.first().map(String::as_str) {
            Some("true") => vec![OsString::from(format!("--{key}"))],
            _ => Vec::new(),
        };
    }
    // `--key=value`, one argument, so that a value that starts with `-` is not taken for a
    // flag.
    values
        .iter()
        .map(|v| OsString::from(format!("--{key}={v}")))
        .collect()
}

/// The file `--print-config` writes: every setting, commented out at its default, with its
/// help and its environment variable.
pub(crate) fn print(cmd: &Command) -> String {
    let mut out = format!(
        "# flexim-server {} configuration, written by `flexim-server --print-config`.\n\
         # Use it with `flexim-server --config FILE` (or FLEXIM_CONFIG=FILE). Each key is a flag's\n\
         # name; the environment variable shown, and then the flag, override the file. Every\n\
         # setting is commented out at its default: remove the `#` to change one.\n",
        cmd.get_version().unwrap_or_default()
    );
    for arg in cmd.get_arguments() {
        let Some(key) = arg.get_long().filter(|k| !NOT_SETTINGS.contains(k)) else {
            continue;
        };
        out.push('\n');
        let help = arg.get_long_help().or(arg.get_help());
        for line in help.map(|h| h.to_string()).unwrap_or_default().lines() {
            let _ = writeln!(out, "# {line}");
        }
        if let Some(env) = arg.get_env() {
            let _ = writeln!(out, "# Environment: {}", env.to_string_lossy());
        }
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|d| toml_value(&d.to_string_lossy()))
            .collect();
        let _ = match defaults.as_slice() {
            [] if is_switch(arg) => writeln!(out, "#{key} = false"),
            [] => writeln!(out, "#{key} ="),
            [one] => writeln!(out, "#{key} = {one}"),
            many => writeln!(out, "#{key} = [{}]", many.join(", ")),
        };
    }
    out
}

/// A default as TOML: a number bare, anything else as a string.
fn toml_value(s: &str) -> String {
    if s.parse::<i64>().is_ok() || (s.parse::<f64>().is_ok() && s.contains('.')) {
        s.to_string()
    } else {
        format!("{s:?}")
    }
}
