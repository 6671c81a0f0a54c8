//! Where the master key that seals users' signing secrets comes from:
//! configuration, never the code.
//!
//! 1. `KEYGATE_MASTER_KEY` (32 bytes, base64), e.g. from a secrets manager;
//! 2. or `--master-key-file PATH` holding the same text;
//! 3. or, for a zero set-up demo on SQLite only, `./data/tools-master.key`,
//!    generated on the first start with a notice that production must
//!    configure the key. (Instances sharing PostgreSQL need one key: it is
//!    never generated for them.)

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use auth_core::jwt::MasterKey;

/// The environment variable holding the key.
pub const ENV: &str = "KEYGATE_MASTER_KEY";
/// The demo's key file when none is configured.
pub const DEFAULT_FILE: &str = "./data/tools-master.key";

/// Where the key was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// The environment variable.
    Env,
    /// An existing file.
    File(PathBuf),
    /// A file made just now: a demo convenience.
    Generated(PathBuf),
}

impl KeySource {
    /// For humans.
    pub fn describe(&self) -> String {
        match self {
            Self::Env => format!("from {ENV}"),
            Self::File(p) => format!("from {}", p.display()),
            Self::Generated(p) => format!("generated in {} (demo only)", p.display()),
        }
    }
}

/// The key: from `env_value` (the variable's value), else `file`, else the
/// `default_file`, which is generated if missing and `may_generate`.
pub fn load(
    env_value: Option<String>,
    file: Option<&Path>,
    default_file: &Path,
    may_generate: bool,
) -> Result<(MasterKey, KeySource), String> {
    let env_value = env_value.filter(|v| !v.trim().is_empty());
    match (env_value, file) {
        (Some(_), Some(_)) => Err(format!(
            "both {ENV} and --master-key-file are set: configure the master key in one place"
        )),
        (Some(text), None) => MasterKey::from_base64(&text)
            .map(|k| (k, KeySource::Env))
            .map_err(|_| format!("{ENV} must hold 32 bytes encoded as base64")),
        (None, Some(path)) => read(path).map(|k| (k, KeySource::File(path.to_owned()))),
        (None, None) if default_file.exists() => {
            read(default_file).map(|k| (k, KeySource::File(default_file.to_owned())))
        }
        (None, None) if may_generate => {
            generate(default_file).map(|k| (k, KeySource::Generated(default_file.to_owned())))
        }
        (None, None) => Err(format!(
            "no master key: set {ENV} (32 bytes, base64; e.g. `openssl rand -base64 32`) \
             or --master-key-file, the same on every instance"
        )),
    }
}

/// The notice printed when the demo made its own key.
pub fn generated_notice(path: &Path) -> String {
    format!(
        "NOTICE: no master key was configured, so this demo generated one in {}.\n\
         It seals every user's signing secret: keep it, or every token stops working.\n\
         Production must configure it instead: {ENV} (32 bytes, base64) from a secrets\n\
         manager, or --master-key-file; never in code or in the repository.",
        path.display()
    )
}

fn read(path: &Path) -> Result<MasterKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the master key file {}: {e}", path.display()))?;
    MasterKey::from_base64(&text).map_err(|_| {
        format!(
            "the master key file {} must hold 32 bytes encoded as base64",
            path.display()
        )
    })
}

fn generate(path: &Path) -> Result<MasterKey, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let text = MasterKey::generate_base64();
    let mut options = std::fs::OpenOptions::new();
    // Never overwrite a key another process just made.
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut f) => f
            .write_all(format!("{text}\n").as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return read(path),
        Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
    }
    MasterKey::from_base64(&text).map_err(|e| e.to_string())
}
