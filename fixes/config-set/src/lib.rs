//! `config-set`: set `key = value` in a `key = value` style config file.
//!
//! Params: `file` (absolute path), `key`, `value`. Keeps comments, order and
//! indentation; changes the first uncommented `key = ...` line or appends one.
//! Not needed when the key already has that value.

use defops_guest::{Check, Fix, Result, fs, info, require_param};

struct ConfigSet;

struct Params {
    file: String,
    key: String,
    value: String,
}

fn params() -> Result<Params> {
    let p = Params {
        file: require_param("file")?,
        key: require_param("key")?,
        value: require_param("value")?,
    };
    if p.key.trim().is_empty() || p.key.contains(['=', '\n', '#']) {
        return Err(format!(
            "key {:?} must be a plain name (no '=', '#' or newline)",
            p.key
        )
        .into());
    }
    if p.value.contains('\n') {
        return Err("value must be one line".into());
    }
    Ok(p)
}

/// The index and current value of the first uncommented `key = value` line.
fn find(text: &str, key: &str) -> Option<(usize, String)> {
    text.lines().enumerate().find_map(|(i, line)| {
        let t = line.trim_start();
        if t.starts_with('#') || t.starts_with(';') {
            return None;
        }
        let (k, v) = t.split_once('=')?;
        (k.trim() == key).then(|| (i, v.trim().to_string()))
    })
}

/// `text` with `key = value` set, everything else kept as it was.
fn set(text: &str, key: &str, value: &str) -> String {
    let Some((at, _)) = find(text, key) else {
        let mut out = text.to_string();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("{key} = {value}\n"));
        return out;
    };
    text.split_inclusive('\n')
        .enumerate()
        .map(|(i, line)| {
            if i != at {
                return line.to_string();
            }
            let indent = &line[..line.len() - line.trim_start().len()];
            let ending = &line[line.trim_end_matches(['\r', '\n']).len()..];
            format!("{indent}{key} = {value}{ending}")
        })
        .collect()
}

impl Fix for ConfigSet {
    fn check() -> Result<Check> {
        let p = params()?;
        let text = fs::read_to_string(&p.file)?;
        Ok(match find(&text, &p.key) {
            Some((_, v)) if v == p.value => {
                Check::not_needed(format!("{} is already {} in {}", p.key, p.value, p.file))
            }
            Some((_, v)) => {
                Check::applies(format!("{} is {v} in {}, want {}", p.key, p.file, p.value))
            }
            None => Check::applies(format!("{} is not set in {}", p.key, p.file)),
        })
    }

    fn apply() -> Result<String> {
        let p = params()?;
        let text = fs::read_to_string(&p.file)?;
        if let Some((_, old)) = find(&text, &p.key) {
            info(format!("{}: {} was {old}", p.file, p.key));
        }
        fs::write(&p.file, set(&text, &p.key, &p.value))?;
        Ok(format!("set {} = {} in {}", p.key, p.value, p.file))
    }
}

defops_guest::export_fix!(ConfigSet);
