//! `[server.compression]`: which responses are compressed, and how.

use serde::Deserialize;

/// `[server.compression]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// Compress eligible responses. Default true.
    pub enabled: bool,
    /// A response whose length is known and smaller than this is sent as is; a response without
    /// a length (streaming) is compressed if otherwise eligible. Default 1024.
    pub min_bytes: u64,
    /// Media types that are compressed (`type/subtype`, `type/*`, or `type/*+suffix`), compared
    /// without parameters and in any case. `text/event-stream` is never compressed. Default:
    /// `application/json`, `application/*+json`, `text/*`, `application/javascript`,
    /// `application/xml`, `image/svg+xml`.
    pub content_types: Vec<MediaRange>,
    /// Encodings offered, in the server's order of preference (it breaks ties between equally
    /// acceptable encodings): `br`, `gzip`. Default `["br", "gzip"]`.
    pub algorithms: Vec<ContentCoding>,
    /// gzip level, 1 (fastest) to 9 (smallest). Default 6.
    pub gzip_level: u32,
    /// Brotli quality, 0 (fastest) to 11 (smallest; far too slow for dynamic responses).
    /// Default 4.
    pub brotli_quality: u32,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_bytes: 1024,
            content_types: [
                "application/json",
                "application/*+json",
                "text/*",
                "application/javascript",
                "application/xml",
                "image/svg+xml",
            ]
            .into_iter()
            .filter_map(|t| MediaRange::parse(t).ok())
            .collect(),
            algorithms: vec![ContentCoding::Brotli, ContentCoding::Gzip],
            gzip_level: 6,
            brotli_quality: 4,
        }
    }
}

impl CompressionConfig {
    /// The first wrong value, as a key below `server.compression` and a message.
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        if !(1..=9).contains(&self.gzip_level) {
            return Err(("gzip_level", "must be 1 to 9".to_owned()));
        }
        if self.brotli_quality > 11 {
            return Err(("brotli_quality", "must be 0 to 11".to_owned()));
        }
        for (i, a) in self.algorithms.iter().enumerate() {
            if self.algorithms[..i].contains(a) {
                return Err(("algorithms", format!("`{}` is listed twice", a.token())));
            }
        }
        Ok(())
    }
}

/// A content coding the gateway can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ContentCoding {
    /// Brotli (RFC 7932), `br`.
    #[serde(rename = "br")]
    Brotli,
    /// gzip (RFC 1952), `gzip`.
    #[serde(rename = "gzip")]
    Gzip,
}

impl ContentCoding {
    /// The token in `accept-encoding` and `content-encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Self::Brotli => "br",
            Self::Gzip => "gzip",
        }
    }
}

/// A media range of `content_types`: `type/subtype`, `type/*` or `type/*+suffix`, lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRange {
    kind: String,
    subtype: Subtype,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Subtype {
    Any,
    Exact(String),
    /// `*+json`: any subtype ending in `+json`.
    Suffix(String),
}

impl MediaRange {
    /// Parses a range; the message says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim().to_ascii_lowercase();
        let wrong = || {
            format!("`{text}` is not a media type (`type/subtype`, `type/*` or `type/*+suffix`)")
        };
        let (kind, subtype) = lower.split_once('/').ok_or_else(wrong)?;
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        if !token(kind) {
            return Err(wrong());
        }
        let subtype = if subtype == "*" {
            Subtype::Any
        } else if let Some(suffix) = subtype.strip_prefix("*+") {
            if !token(suffix) {
                return Err(wrong());
            }
            Subtype::Suffix(format!("+{suffix}"))
        } else if token(subtype) {
            Subtype::Exact(subtype.to_owned())
        } else {
            return Err(wrong());
        };
        Ok(Self {
            kind: kind.to_owned(),
            subtype,
        })
    }

    /// Whether a media type (lowercase `type/subtype`, no parameters) is in this range.
    pub fn matches(&self, kind: &str, subtype: &str) -> bool {
        kind == self.kind
            && match &self.subtype {
                Subtype::Any => true,
                Subtype::Exact(s) => s == subtype,
                Subtype::Suffix(suffix) => {
                    subtype.len() > suffix.len() && subtype.ends_with(suffix.as_str())
                }
            }
    }
}

impl<'de> Deserialize<'de> for MediaRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_ranges() {
        let json = MediaRange::parse("Application/JSON").unwrap();
        assert!(json.matches("application", "json"));
        assert!(!json.matches("application", "jsonx"));
        let text = MediaRange::parse("text/*").unwrap();
        assert!(text.matches("text", "html"));
        assert!(!text.matches("texts", "html"));
        let suffix = MediaRange::parse("application/*+json").unwrap();
        assert!(suffix.matches("application", "problem+json"));
        assert!(!suffix.matches("application", "+json"));
        assert!(!suffix.matches("application", "json"));
        for bad in ["json", "/json", "text/", "a b/c", "text/*+", "*/*x"] {
            assert!(MediaRange::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(CompressionConfig::default().content_types.len(), 6);
    }

    #[test]
    fn bad_settings_name_their_key() {
        let parse = |body: &str| {
            crate::config::Config::parse(
                &format!("[server.compression]\n{body}\n"),
                std::path::Path::new("tessera.toml"),
                std::path::Path::new("."),
            )
        };
        for (body, expected) in [
            (
                "gzip_level = 0",
                "server.compression.gzip_level: must be 1 to 9",
            ),
            (
                "gzip_level = 10",
                "server.compression.gzip_level: must be 1 to 9",
            ),
            (
                "brotli_quality = 12",
                "server.compression.brotli_quality: must be 0 to 11",
            ),
            (
                "algorithms = [\"gzip\", \"gzip\"]",
                "`gzip` is listed twice",
            ),
            ("algorithms = [\"zstd\"]", "unknown variant `zstd`"),
            ("content_types = [\"json\"]", "`json` is not a media type"),
            ("level = 3", "unknown field `level`"),
        ] {
            let err = parse(body).unwrap_err().to_string();
            assert!(err.contains(expected), "{body}: {err}");
        }
        let config = parse("enabled = false\nmin_bytes = 10\nalgorithms = [\"gzip\"]").unwrap();
        let c = &config.server.compression;
        assert!(!c.enabled);
        assert_eq!(c.min_bytes, 10);
        assert_eq!(c.algorithms, [ContentCoding::Gzip]);
        assert_eq!(c.gzip_level, 6);
    }
}
