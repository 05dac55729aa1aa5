//! The remembered connection: `$XDG_CONFIG_HOME/aevis/client.toml` (or
//! `$HOME/.config/aevis/client.toml`), two string keys written by hand.

use std::path::{Path, PathBuf};

/// What the connect screen remembers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Daemon address.
    pub url: String,
    /// Bearer token, if any.
    pub token: Option<String>,
}

/// The config file's path, `None` when neither variable is set.
pub fn path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("aevis").join("client.toml"))
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn unquote(s: &str) -> Option<String> {
    let inner = s.trim().strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next()? {
                'n' => out.push('\n'),
                other => out.push(other),
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

impl Config {
    /// The TOML text.
    pub fn to_toml(&self) -> String {
        let mut s = format!("# aevis client connection\nurl = {}\n", quote(&self.url));
        if let Some(t) = &self.token {
            s.push_str(&format!("token = {}\n", quote(t)));
        }
        s
    }

    /// Reads the keys it knows from TOML text; other lines are ignored.
    pub fn from_toml(text: &str) -> Self {
        let mut c = Config::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else { continue };
            match (k.trim(), unquote(v)) {
                ("url", Some(v)) => c.url = v,
                ("token", Some(v)) if !v.is_empty() => c.token = Some(v),
                _ => {}
            }
        }
        c
    }

    /// Loads from `path`; a missing or unreadable file gives the default.
    pub fn load_from(path: &Path) -> Self {
        std::fs::read_to_string(path).map(|t| Self::from_toml(&t)).unwrap_or_default()
    }

    /// Writes to `path`, creating its folder; the file is private to the user.
    pub fn save_to(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, self.to_toml())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let c = Config { url: "http://h:1".into(), token: Some("a\"b\\c".into()) };
        assert_eq!(c.to_toml(), "# aevis client connection\nurl = \"http://h:1\"\ntoken = \"a\\\"b\\\\c\"\n");
        assert_eq!(Config::from_toml(&c.to_toml()), c);
        assert_eq!(Config::from_toml("url = 3\nother = \"x\""), Config::default());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("aevis/client.toml");
        assert_eq!(Config::load_from(&p), Config::default());
        c.save_to(&p).unwrap();
        assert_eq!(Config::load_from(&p), c);
    }
}
