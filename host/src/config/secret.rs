//! Secrets in the config: a string value that is entirely `${env:NAME}` or `${file:PATH}` is
//! replaced, when the config is parsed (at start and at every reload), by the environment
//! variable or the file's contents. `$${...}` is a literal string starting with `${`; anything
//! else is literal. There is no interpolation inside longer strings.
//!
//! References are allowed in `admin.token`, in every string of a route entry's plugin `config`
//! table, and in any key typed [`Secret`]. Errors name the key and the variable or file, never
//! the value.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{Config, ConfigError};

/// Largest file a `${file:...}` reference may name, in bytes.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// A config string that may come from `${env:NAME}` or `${file:PATH}`. Its `Debug` and
/// `Display` never show the value; [`Secret::expose`] is the one way to read it.
#[derive(Clone)]
pub struct Secret {
    written: Spanned<String>,
    /// The value; for a reference, set when the config is parsed.
    value: Option<String>,
}

impl Secret {
    /// A secret holding `value` as is (no reference is resolved).
    pub fn from_value(value: impl Into<String>) -> Self {
        let value = value.into();
        Self {
            written: Spanned::new(0..0, String::new()),
            value: Some(value),
        }
    }

    /// The value. [`Config::parse`] resolves every reference; a reference that was never
    /// resolved (a `Secret` deserialized outside it) reads as empty.
    pub fn expose(&self) -> &str {
        self.value.as_deref().unwrap_or("")
    }

    /// Resolves the written form; `key` names it in errors.
    fn resolve(&mut self, resolver: &Resolver<'_>, key: &str) -> Result<(), ConfigError> {
        if self.value.is_some() {
            return Ok(());
        }
        let line = resolver.line_at(self.written.span().start);
        let value = resolver
            .resolve(self.written.get_ref())
            .map_err(|message| resolver.invalid(line, key, message))?;
        self.value = Some(value.value);
        Ok(())
    }
}

impl Secret {
    /// Where it was written in the config file.
    pub fn span(&self) -> std::ops::Range<usize> {
        self.written.span()
    }
}

/// Equal when written the same way and resolved to the same value (reloads compare configs).
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.written.get_ref() == other.written.get_ref() && self.value == other.value
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let written = Spanned::<String>::deserialize(d)?;
        // A literal needs no resolving; references wait for the config's directory.
        let value = match classify(written.get_ref()) {
            Written::Literal(v) => Some(v.to_owned()),
            Written::Reference(_) => None,
        };
        Ok(Self { written, value })
    }
}

/// A plugin entry's `config` table, kept twice: as written (references unresolved; what `Debug`
/// shows) and resolved (what the plugin reads).
#[derive(Clone, Default, PartialEq)]
pub struct PluginConfig {
    written: toml::Table,
    resolved: toml::Table,
}

impl PluginConfig {
    /// The table the plugin reads, references resolved.
    pub fn table(&self) -> &toml::Table {
        &self.resolved
    }

    /// The table as written in the file, references unresolved.
    pub fn written(&self) -> &toml::Table {
        &self.written
    }

    /// The values references resolved to, so text that may echo the table (a plugin's message
    /// about its config) can be scrubbed of them.
    pub fn secret_values(&self) -> Vec<&str> {
        fn walk<'a>(written: &toml::Value, resolved: &'a toml::Value, out: &mut Vec<&'a str>) {
            match (written, resolved) {
                (toml::Value::String(w), toml::Value::String(r)) if w != r && !r.is_empty() => {
                    out.push(r)
                }
                (toml::Value::Array(w), toml::Value::Array(r)) => {
                    for (w, r) in w.iter().zip(r) {
                        walk(w, r, out);
                    }
                }
                (toml::Value::Table(w), toml::Value::Table(r)) => {
                    for (k, w) in w {
                        if let Some(r) = r.get(k) {
                            walk(w, r, out);
                        }
                    }
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        for (k, w) in &self.written {
            if let Some(r) = self.resolved.get(k) {
                walk(w, r, &mut out);
            }
        }
        out
    }

    /// Resolves every string in the table; `key` is the table's own key (for errors).
    fn resolve(&mut self, resolver: &Resolver<'_>, key: &str) -> Result<(), ConfigError> {
        let mut resolved = self.written.clone();
        for (k, v) in resolved.iter_mut() {
            resolve_value(v, &format!("{key}.{k}"), resolver)?;
        }
        self.resolved = resolved;
        Ok(())
    }
}

impl From<toml::Table> for PluginConfig {
    /// A table taken as written; [`Config::parse`] resolves its references.
    fn from(table: toml::Table) -> Self {
        Self {
            resolved: table.clone(),
            written: table,
        }
    }
}

impl std::fmt::Debug for PluginConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The written form: references show as `${env:NAME}`, never as what they resolved to.
        std::fmt::Debug::fmt(&self.written, f)
    }
}

impl<'de> Deserialize<'de> for PluginConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        toml::Table::deserialize(d).map(Self::from)
    }
}

fn resolve_value(
    value: &mut toml::Value,
    key: &str,
    resolver: &Resolver<'_>,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) => {
            let resolved = resolver.resolve(s).map_err(|message| {
                // Plugin tables carry no spans: the first place the reference is written is
                // where the same error would be for every other use of it.
                let line = resolver
                    .text
                    .find(s.as_str())
                    .map_or(0, |at| resolver.line_at(at));
                resolver.invalid(line, key, message)
            })?;
            *s = resolved.value;
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                resolve_value(item, &format!("{key}[{i}]"), resolver)?;
            }
        }
        toml::Value::Table(table) => {
            for (k, v) in table.iter_mut() {
                resolve_value(v, &format!("{key}.{k}"), resolver)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Resolves every reference in a parsed config: `admin.token`, bucket URLs and plugin config
/// tables.
pub(super) fn resolve_config(
    config: &mut Config,
    resolver: &Resolver<'_>,
) -> Result<(), ConfigError> {
    if let Some(token) = config.admin.as_mut().and_then(|a| a.token.as_mut()) {
        token.resolve(resolver, "admin.token")?;
    }
    for (name, bucket) in &mut config.buckets {
        if let Some(url) = bucket.url.as_mut() {
            url.resolve(resolver, &format!("buckets.{name}.url"))?;
        }
    }
    for (i, route) in config.routes.iter_mut().enumerate() {
        if let Some(table) = route.handler.as_mut().and_then(|h| h.config.as_mut()) {
            table.resolve(resolver, &format!("routes[{i}].handler.config"))?;
        }
        for (j, filter) in route.filters.iter_mut().enumerate() {
            if let Some(table) = filter.config.as_mut() {
                table.resolve(resolver, &format!("routes[{i}].filters[{j}].config"))?;
            }
        }
    }
    Ok(())
}

/// How a written string reads.
#[derive(Debug, PartialEq, Eq)]
enum Written<'a> {
    /// A literal, escape removed.
    Literal(&'a str),
    /// Starts with `${`: must be a whole reference; the text between `${` and the end.
    Reference(&'a str),
}

fn classify(written: &str) -> Written<'_> {
    if written.starts_with("$${") {
        // `$${x}` is the literal `${x}`: drop the first `$` only.
        Written::Literal(&written[1..])
    } else if let Some(rest) = written.strip_prefix("${") {
        Written::Reference(rest)
    } else {
        Written::Literal(written)
    }
}

/// A parsed reference.
#[derive(Debug, PartialEq, Eq)]
enum Reference<'a> {
    Env(&'a str),
    File(&'a str),
}

/// Parses what follows `${`; the message never repeats the written text, which may be a
/// mistyped secret.
fn parse_reference(rest: &str) -> Result<Reference<'_>, String> {
    const FORMS: &str = "`${env:NAME}` or `${file:PATH}` (write `$${` for a literal `${`)";
    let Some(inner) = rest.strip_suffix('}') else {
        return Err(format!(
            "a value starting with `${{` must be a whole reference, {FORMS}; references are \
             not expanded inside longer strings"
        ));
    };
    let Some((kind, arg)) = inner.split_once(':') else {
        return Err(format!("a reference needs a kind: {FORMS}"));
    };
    match kind {
        "env" => {
            let valid = arg
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && arg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if arg.is_empty() {
                Err("`${env:}` names no environment variable".to_owned())
            } else if !valid {
                Err(
                    "`${env:NAME}` needs a variable name of ASCII letters, digits and `_`, \
                     not starting with a digit"
                        .to_owned(),
                )
            } else {
                Ok(Reference::Env(arg))
            }
        }
        "file" => {
            if arg.is_empty() {
                Err("`${file:}` names no file".to_owned())
            } else if arg.contains('\0') {
                Err("`${file:PATH}` must not contain NUL".to_owned())
            } else {
                Ok(Reference::File(arg))
            }
        }
        other => {
            let shown: String = other.chars().take(32).collect();
            Err(format!(
                "unknown reference kind `{}`: the kinds are `env` and `file`",
                shown.escape_debug()
            ))
        }
    }
}

/// A resolved string.
struct Resolved {
    value: String,
}

/// Resolves references against the config file's directory and an environment.
pub(super) struct Resolver<'a> {
    /// The config text (for line numbers).
    pub(super) text: &'a str,
    /// The config file (for messages).
    pub(super) path: &'a Path,
    /// Where relative file references resolve.
    pub(super) base_dir: &'a Path,
    /// Looks up an environment variable.
    pub(super) env: &'a dyn Fn(&str) -> Option<OsString>,
}

impl Resolver<'_> {
    /// 1-based line of byte `offset` of the text (0 for an unknown place).
    fn line_at(&self, offset: usize) -> usize {
        if offset == 0 && self.text.is_empty() {
            return 0;
        }
        let end = (offset + 1).min(self.text.len());
        self.text.get(..end).map_or(0, |t| t.lines().count().max(1))
    }

    fn invalid(&self, line: usize, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line,
            key: key.to_owned(),
            message,
        }
    }

    /// The value `written` stands for.
    fn resolve(&self, written: &str) -> Result<Resolved, String> {
        let rest = match classify(written) {
            Written::Literal(v) => {
                return Ok(Resolved {
                    value: v.to_owned(),
                });
            }
            Written::Reference(rest) => rest,
        };
        let value = match parse_reference(rest)? {
            Reference::Env(name) => {
                let Some(raw) = (self.env)(name) else {
                    return Err(format!("environment variable `{name}` is not set"));
                };
                let value = raw
                    .into_string()
                    .map_err(|_| format!("environment variable `{name}` is not valid UTF-8"))?;
                if value.is_empty() {
                    return Err(format!("environment variable `{name}` is empty"));
                }
                value
            }
            Reference::File(file) => {
                let path = if Path::new(file).is_absolute() {
                    PathBuf::from(file)
                } else {
                    self.base_dir.join(file)
                };
                let value = read_secret_file(&path)?;
                if value.is_empty() {
                    return Err(format!("secret file {} is empty", path.display()));
                }
                value
            }
        };
        Ok(Resolved { value })
    }
}

/// Reads a secret file: a regular file of at most [`MAX_SECRET_FILE_BYTES`], UTF-8, with one
/// trailing `\n` or `\r\n` removed (what `echo` and editors add).
fn read_secret_file(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let cannot = |e: std::io::Error| format!("cannot read secret file {shown}: {e}");
    // Not a FIFO or a device: reading one could block the reload or never end.
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if !meta.is_file() {
        return Err(format!("secret file {shown} is not a regular file"));
    }
    let too_large = || format!("secret file {shown} is larger than {MAX_SECRET_FILE_BYTES} bytes");
    if meta.len() > MAX_SECRET_FILE_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SECRET_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(cannot)?;
    // The file may have grown between the two looks.
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(too_large());
    }
    let mut text =
        String::from_utf8(bytes).map_err(|_| format!("secret file {shown} is not valid UTF-8"))?;
    if text.ends_with("\r\n") {
        text.truncate(text.len() - 2);
    } else if text.ends_with('\n') {
        text.truncate(text.len() - 1);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("tessera-secret-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn env(name: &str) -> Option<OsString> {
        match name {
            "JWT_SECRET" => Some("s3cr3t-from-env".into()),
            "EMPTY" => Some(OsString::new()),
            #[cfg(unix)]
            "NOT_UTF8" => {
                use std::os::unix::ffi::OsStringExt;
                Some(OsString::from_vec(vec![0xff, 0xfe]))
            }
            _ => None,
        }
    }

    fn parse_in(dir: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::parse_with_env(text, Path::new("tessera.toml"), dir, &env)
    }

    fn handler_route(config: &str) -> String {
        format!(
            "[plugins.files]\nh = \"h.wasm\"\n[[routes]]\npath = \"/\"\nhandler = {{ plugin = \"h\", config = {config} }}\n"
        )
    }

    fn handler_json(config: &Config) -> String {
        super::super::table_to_json(config.routes[0].handler.as_ref().unwrap().config.as_ref())
    }

    #[test]
    fn env_and_file_references_resolve_in_plugin_config() {
        let dir = Scratch::new("resolve");
        std::fs::write(dir.0.join("key.txt"), "from-file\n").unwrap();
        std::fs::write(dir.0.join("crlf.txt"), "two-lines\nkept\r\n").unwrap();
        let text = handler_route(
            r#"{ a = "${env:JWT_SECRET}", nested = { b = "${file:key.txt}" }, list = ["x", "${file:crlf.txt}"], n = 3, plain = "hello" }"#,
        );
        let config = parse_in(&dir.0, &text).unwrap();
        let json: serde_json::Value = serde_json::from_str(&handler_json(&config)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "a": "s3cr3t-from-env",
                "nested": { "b": "from-file" },
                "list": ["x", "two-lines\nkept"],
                "n": 3,
                "plain": "hello",
            })
        );
    }

    #[test]
    fn absolute_file_path_and_filter_config() {
        let dir = Scratch::new("absolute");
        let file = dir.0.join("abs.txt");
        std::fs::write(&file, "abs-value").unwrap();
        let text = format!(
            "[plugins.files]\nf = \"f.wasm\"\n[upstreams.u]\ntargets = [\"127.0.0.1:9\"]\n[[routes]]\npath = \"/\"\nupstream = \"u\"\nfilters = [{{ plugin = \"f\", config = {{ k = \"${{file:{}}}\" }} }}]\n",
            file.display()
        );
        // Resolved against an unrelated base directory: the absolute path wins.
        let config = parse_in(Path::new("/nonexistent"), &text).unwrap();
        let table = config.routes[0].filters[0].config.as_ref().unwrap().table();
        assert_eq!(table["k"].as_str(), Some("abs-value"));
    }

    #[test]
    fn escape_and_literals() {
        let text = handler_route(
            r#"{ a = "$${env:JWT_SECRET}", b = "prefix ${env:JWT_SECRET}", c = "$$x", d = "$", e = "${" }"#,
        );
        let err = parse_in(Path::new("."), &text).unwrap_err().to_string();
        // `e` is the only wrong one: a value starting with `${` must be a whole reference.
        assert!(err.contains("routes[0].handler.config.e"), "{err}");
        let text = handler_route(
            r#"{ a = "$${env:JWT_SECRET}", b = "prefix ${env:JWT_SECRET}", c = "$$x", d = "$" }"#,
        );
        let config = parse_in(Path::new("."), &text).unwrap();
        let json: serde_json::Value = serde_json::from_str(&handler_json(&config)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "a": "${env:JWT_SECRET}",
                "b": "prefix ${env:JWT_SECRET}",
                "c": "$$x",
                "d": "$",
            })
        );
    }

    #[test]
    fn admin_token_from_env_and_file() {
        let dir = Scratch::new("admin");
        std::fs::write(dir.0.join("token"), "file-token\r\n").unwrap();
        let config = parse_in(&dir.0, "[admin]\ntoken = \"${file:token}\"\n").unwrap();
        let admin = config.admin.as_ref().unwrap();
        assert_eq!(admin.token.as_ref().unwrap().expose(), "file-token");
        let config = parse_in(&dir.0, "[admin]\ntoken = \"${env:JWT_SECRET}\"\n").unwrap();
        let token = config.admin.as_ref().unwrap().token.as_ref().unwrap();
        assert_eq!(token.expose(), "s3cr3t-from-env");
        let err = parse_in(&dir.0, "\n[admin]\ntoken = \"${env:NOPE_UNSET}\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "tessera.toml:3: admin.token: environment variable `NOPE_UNSET` is not set"
        );
    }

    #[test]
    fn debug_and_display_never_show_resolved_values() {
        let dir = Scratch::new("debug");
        std::fs::write(dir.0.join("key"), "file-secret-value").unwrap();
        let text = format!(
            "[admin]\ntoken = \"${{env:JWT_SECRET}}\"\n{}",
            handler_route(r#"{ a = "${env:JWT_SECRET}", b = "${file:key}" }"#)
        );
        let config = parse_in(&dir.0, &text).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cr3t-from-env"), "{debug}");
        assert!(!debug.contains("file-secret-value"), "{debug}");
        assert!(debug.contains("${env:JWT_SECRET}"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        let token = config.admin.as_ref().unwrap().token.as_ref().unwrap();
        assert_eq!(token.to_string(), "<redacted>");
        assert_eq!(format!("{token:?}"), "Secret(<redacted>)");
        let literal = Secret::from_value("inline");
        assert_eq!(
            format!("{literal} {literal:?}"),
            "<redacted> Secret(<redacted>)"
        );
        assert_eq!(literal.expose(), "inline");
    }

    /// Each error names the file, key and what was referenced; none shows a value.
    #[test]
    fn errors_name_key_and_source_never_value() {
        let dir = Scratch::new("errors");
        std::fs::write(dir.0.join("big"), vec![b'a'; 64 * 1024 + 1]).unwrap();
        std::fs::write(dir.0.join("exact"), vec![b'a'; 64 * 1024]).unwrap();
        std::fs::write(dir.0.join("binary"), [0xffu8, 0xfe, 0x00]).unwrap();
        std::fs::write(dir.0.join("empty"), "\n").unwrap();
        std::fs::create_dir_all(dir.0.join("adir")).unwrap();
        let d = dir.0.display();
        let cases: Vec<(&str, String)> = vec![
            (
                "${env:UNSET_VAR}",
                "environment variable `UNSET_VAR` is not set".into(),
            ),
            (
                "${env:EMPTY}",
                "environment variable `EMPTY` is empty".into(),
            ),
            (
                "${file:missing.txt}",
                format!("cannot read secret file {d}/missing.txt"),
            ),
            (
                "${file:big}",
                format!("secret file {d}/big is larger than 65536 bytes"),
            ),
            (
                "${file:binary}",
                format!("secret file {d}/binary is not valid UTF-8"),
            ),
            ("${file:empty}", format!("secret file {d}/empty is empty")),
            (
                "${file:adir}",
                format!("secret file {d}/adir is not a regular file"),
            ),
            (
                "${vault:kv/x}",
                "unknown reference kind `vault`: the kinds are `env` and `file`".into(),
            ),
            ("${env:}", "`${env:}` names no environment variable".into()),
            ("${file:}", "`${file:}` names no file".into()),
            ("${env:A-B}", "needs a variable name".into()),
            ("${env:X", "must be a whole reference".into()),
            ("${env:X} tail", "must be a whole reference".into()),
            ("${JWT_SECRET}", "a reference needs a kind".into()),
        ];
        #[cfg(unix)]
        let cases = {
            let mut cases = cases;
            cases.push((
                "${env:NOT_UTF8}",
                "environment variable `NOT_UTF8` is not valid UTF-8".into(),
            ));
            cases
        };
        for (written, expected) in &cases {
            let text = handler_route(&format!(
                "{{ mode = \"x\", deep = {{ k = \"{written}\" }} }}"
            ));
            let err = parse_in(&dir.0, &text).unwrap_err().to_string();
            assert!(
                err.starts_with("tessera.toml:5: routes[0].handler.config.deep.k: "),
                "{written}: {err}"
            );
            assert!(err.contains(expected.as_str()), "{written}: {err}");
            assert!(!err.contains("s3cr3t"), "{written}: {err}");
        }
        let text = handler_route(r#"{ k = "${file:exact}" }"#);
        let config = parse_in(&dir.0, &text).unwrap();
        let table = config.routes[0].handler.as_ref().unwrap().config.as_ref();
        assert_eq!(
            table.unwrap().table()["k"].as_str().map(str::len),
            Some(65536)
        );
    }

    #[test]
    fn error_in_a_filter_array_names_its_index() {
        let text = "[plugins.files]\nf = \"f.wasm\"\n[upstreams.u]\ntargets = [\"127.0.0.1:9\"]\n[[routes]]\npath = \"/\"\nupstream = \"u\"\n[[routes.filters]]\nplugin = \"f\"\nconfig = { keys = [\"ok\", \"${env:GONE}\"] }\n";
        let err = parse_in(Path::new("."), text).unwrap_err().to_string();
        assert_eq!(
            err,
            "tessera.toml:10: routes[0].filters[0].config.keys[1]: environment variable `GONE` is not set"
        );
    }

    #[test]
    fn classify_and_parse_reference() {
        assert_eq!(classify("plain"), Written::Literal("plain"));
        assert_eq!(classify("$${env:X}"), Written::Literal("${env:X}"));
        assert_eq!(classify("${env:X}"), Written::Reference("env:X}"));
        assert_eq!(classify(""), Written::Literal(""));
        assert_eq!(parse_reference("env:X_1}"), Ok(Reference::Env("X_1")));
        assert_eq!(
            parse_reference("file:a/b:c.txt}"),
            Ok(Reference::File("a/b:c.txt"))
        );
        assert!(parse_reference("env:1X}").is_err());
        assert!(parse_reference("}").is_err());
    }
}
