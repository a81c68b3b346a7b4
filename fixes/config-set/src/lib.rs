//! `config-set`: set `key = value` in a `key = value` style config file.
//!
//! Params: `file` (absolute path; a `*` in its last component selects every
//! matching file in that directory, e.g. `/etc/app/conf.d/*.conf`), `key`,
//! `value`. Keeps comments, order and indentation; changes the first
//! uncommented `key = ...` line or appends one. Not needed when every file
//! already has that value.

use defops_guest::{Check, Fix, Result, fs, info, require_param};

struct ConfigSet;

struct Params {
    files: Vec<String>,
    key: String,
    value: String,
}

/// `*` matches any run of characters (no `/`).
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.starts_with(head)
                && (0..=name.len() - head.len()).any(|i| {
                    name.is_char_boundary(head.len() + i) && matches(tail, &name[head.len() + i..])
                })
        }
    }
}

/// The files `file` names: itself, or the matches of its last component.
fn expand(file: &str) -> Result<Vec<String>> {
    let (dir, pattern) = file.rsplit_once('/').unwrap_or(("", file));
    if !pattern.contains('*') {
        return Ok(vec![file.to_string()]);
    }
    let found: Vec<String> = fs::read_dir(dir)?
        .into_iter()
        .filter(|e| e.file_type == fs::FileType::File && matches(pattern, &e.name))
        .map(|e| e.path)
        .collect();
    if found.is_empty() {
        return Err(format!("no file matches {file}").into());
    }
    Ok(found)
}

fn params() -> Result<Params> {
    let p = Params {
        files: expand(&require_param("file")?)?,
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
        let mut differ = Vec::new();
        for file in &p.files {
            let text = fs::read_to_string(file)?;
            match find(&text, &p.key) {
                Some((_, v)) if v == p.value => {}
                Some((_, v)) => differ.push(format!("{} is {v} in {file}", p.key)),
                None => differ.push(format!("{} is not set in {file}", p.key)),
            }
        }
        Ok(match differ.as_slice() {
            [] if p.files.len() == 1 => Check::not_needed(format!(
                "{} is already {} in {}",
                p.key, p.value, p.files[0]
            )),
            [] => Check::not_needed(format!(
                "{} is already {} in all {} files",
                p.key,
                p.value,
                p.files.len()
            )),
            [one] => Check::applies(format!("{one}, want {}", p.value)),
            many => Check::applies(format!(
                "{} of {} files need {} = {}",
                many.len(),
                p.files.len(),
                p.key,
                p.value
            )),
        })
    }

    fn apply() -> Result<String> {
        let p = params()?;
        for file in &p.files {
            let text = fs::read_to_string(file)?;
            if let Some((_, old)) = find(&text, &p.key)
                && p.files.len() == 1
            {
                info(format!("{file}: {} was {old}", p.key));
            }
            fs::write(file, set(&text, &p.key, &p.value))?;
        }
        Ok(match p.files.as_slice() {
            [one] => format!("set {} = {} in {one}", p.key, p.value),
            all => format!("set {} = {} in {} files", p.key, p.value, all.len()),
        })
    }
}

defops_guest::export_fix!(ConfigSet);
