//! `--serial` (the PL011) and the JSON both it and `--console` (the
//! virtio-console, [`super::ConsoleConfig`]) take in the API: upstream's
//! ConsoleConfig object, `{"mode": "File", "file": "/tmp/out"}`, where the
//! mode picks the variant and `file`/`socket` carry its path.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConsoleConfig;
use super::options::{OptionError, Options};

/// `--serial`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ConsoleJson", into = "ConsoleJson")]
pub enum SerialConfig {
    /// The VMM's stdout/stdin.
    #[default]
    Tty,
    /// Output appended to a file.
    File(PathBuf),
    /// No console.
    Off,
    /// Output discarded (upstream's Null: the device is there, silent).
    Null,
    /// A pseudo-terminal the VMM opens (see `crate::pty`); `vm.info` shows
    /// its path in `file`.
    Pty,
    /// A Unix socket the VMM listens on (see `crate::serial_socket`), one
    /// client at a time.
    Socket(PathBuf),
}

impl SerialConfig {
    /// Parse `tty|off|null|pty|file=<path>|socket=<path>`.
    pub fn parse(input: &str) -> Result<Self, OptionError> {
        match input {
            "tty" => Ok(SerialConfig::Tty),
            "off" => Ok(SerialConfig::Off),
            "null" => Ok(SerialConfig::Null),
            "pty" => Ok(SerialConfig::Pty),
            _ => {
                let opts = Options::parse("serial", input, &["file", "socket"], false)?;
                match (opts.get("file"), opts.get("socket")) {
                    (Some(file), None) => Ok(SerialConfig::File(PathBuf::from(file))),
                    (None, Some(socket)) => Ok(SerialConfig::Socket(PathBuf::from(socket))),
                    _ => Err(opts.invalid(
                        "serial",
                        input,
                        "use tty, off, null, pty, file=<path> or socket=<path>",
                    )),
                }
            }
        }
    }
}

/// A JSON console object whose fields do not fit its mode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("field {field}={value} is not supported: {fix}")]
pub struct UnsupportedValue {
    /// The JSON field.
    pub field: &'static str,
    /// The value given.
    pub value: String,
    /// What would work.
    pub fix: &'static str,
}

/// cloud-hypervisor's ConsoleMode values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum ConsoleMode {
    Off,
    Pty,
    Tty,
    File,
    Socket,
    Null,
}

/// The wire form of [`SerialConfig`] and [`ConsoleConfig`] (upstream's
/// ConsoleConfig; its other fields are checked by the API's
/// upstream_fields and otherwise ignored, as upstream ignores unknown ones).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct ConsoleJson {
    mode: ConsoleMode,
    /// The file for mode File; for mode Pty, `vm.info` reports the pty here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file: Option<PathBuf>,
    /// The socket for mode Socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    socket: Option<PathBuf>,
}

impl ConsoleJson {
    fn new(mode: ConsoleMode, file: Option<PathBuf>, socket: Option<PathBuf>) -> Self {
        ConsoleJson { mode, file, socket }
    }
}

/// The refusal of a `file` given with a mode other than File, or of File
/// without one.
fn misplaced_file(
    field: &'static str,
    mode: ConsoleMode,
    file: Option<PathBuf>,
) -> UnsupportedValue {
    UnsupportedValue {
        field,
        value: format!("{file:?}"),
        fix: if mode == ConsoleMode::File {
            "mode File needs a file"
        } else {
            "give a file only with mode File"
        },
    }
}

impl TryFrom<ConsoleJson> for SerialConfig {
    type Error = UnsupportedValue;

    fn try_from(json: ConsoleJson) -> Result<Self, Self::Error> {
        match (json.mode, json.file) {
            (ConsoleMode::Tty, None) => Ok(SerialConfig::Tty),
            (ConsoleMode::Off, None) => Ok(SerialConfig::Off),
            (ConsoleMode::Null, None) => Ok(SerialConfig::Null),
            // A file given with Pty is where upstream reports the pty: ignored.
            (ConsoleMode::Pty, _) => Ok(SerialConfig::Pty),
            (ConsoleMode::File, Some(path)) => Ok(SerialConfig::File(path)),
            (ConsoleMode::Socket, None) => match json.socket {
                Some(path) => Ok(SerialConfig::Socket(path)),
                None => Err(UnsupportedValue {
                    field: "serial.socket",
                    value: "null".into(),
                    fix: "mode Socket needs the socket's path",
                }),
            },
            (mode, file) => Err(misplaced_file("serial.file", mode, file)),
        }
    }
}

impl From<SerialConfig> for ConsoleJson {
    fn from(serial: SerialConfig) -> Self {
        match serial {
            SerialConfig::Tty => ConsoleJson::new(ConsoleMode::Tty, None, None),
            SerialConfig::Off => ConsoleJson::new(ConsoleMode::Off, None, None),
            SerialConfig::Null => ConsoleJson::new(ConsoleMode::Null, None, None),
            SerialConfig::Pty => ConsoleJson::new(ConsoleMode::Pty, None, None),
            SerialConfig::File(path) => ConsoleJson::new(ConsoleMode::File, Some(path), None),
            SerialConfig::Socket(path) => ConsoleJson::new(ConsoleMode::Socket, None, Some(path)),
        }
    }
}

/// The virtio-console has no Socket mode (upstream_fields refuses it
/// first, naming the alternatives; this is the typed check).
impl TryFrom<ConsoleJson> for ConsoleConfig {
    type Error = UnsupportedValue;

    fn try_from(json: ConsoleJson) -> Result<Self, Self::Error> {
        match (json.mode, json.file) {
            (ConsoleMode::Off, None) => Ok(ConsoleConfig::Off),
            (ConsoleMode::Null, None) => Ok(ConsoleConfig::Null),
            (ConsoleMode::Tty, None) => Ok(ConsoleConfig::Tty),
            (ConsoleMode::Pty, _) => Ok(ConsoleConfig::Pty),
            (ConsoleMode::File, Some(path)) => Ok(ConsoleConfig::File(path)),
            (ConsoleMode::Socket, _) => Err(UnsupportedValue {
                field: "console.mode",
                value: "\"Socket\"".into(),
                fix: "the virtio-console has no Socket mode yet; use Pty or File",
            }),
            (mode, file) => Err(misplaced_file("console.file", mode, file)),
        }
    }
}

impl From<ConsoleConfig> for ConsoleJson {
    fn from(console: ConsoleConfig) -> Self {
        match console {
            ConsoleConfig::Off => ConsoleJson::new(ConsoleMode::Off, None, None),
            ConsoleConfig::Null => ConsoleJson::new(ConsoleMode::Null, None, None),
            ConsoleConfig::Pty => ConsoleJson::new(ConsoleMode::Pty, None, None),
            ConsoleConfig::Tty => ConsoleJson::new(ConsoleMode::Tty, None, None),
            ConsoleConfig::File(path) => ConsoleJson::new(ConsoleMode::File, Some(path), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serial(json: &str) -> Result<SerialConfig, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    fn console(json: &str) -> Result<ConsoleConfig, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn each_mode_reads_its_path_and_is_written_back_the_same() {
        for (json, expected) in [
            (r#"{"mode":"Tty"}"#, SerialConfig::Tty),
            (r#"{"mode":"Off"}"#, SerialConfig::Off),
            (r#"{"mode":"Null"}"#, SerialConfig::Null),
            (r#"{"mode":"Pty"}"#, SerialConfig::Pty),
            (
                r#"{"mode":"File","file":"/tmp/out"}"#,
                SerialConfig::File("/tmp/out".into()),
            ),
            (
                r#"{"mode":"Socket","socket":"/run/s"}"#,
                SerialConfig::Socket("/run/s".into()),
            ),
        ] {
            assert_eq!(serial(json).unwrap(), expected, "{json}");
            assert_eq!(serde_json::to_string(&expected).unwrap(), json);
        }
        assert_eq!(
            serial(r#"{"mode":"Pty","file":"/dev/pts/3"}"#).unwrap(),
            SerialConfig::Pty,
            "the pty upstream reported is not a request"
        );
        assert_eq!(
            console(r#"{"mode":"File","file":"/tmp/hvc0"}"#).unwrap(),
            ConsoleConfig::File("/tmp/hvc0".into())
        );
        assert_eq!(
            serde_json::to_string(&ConsoleConfig::Pty).unwrap(),
            r#"{"mode":"Pty"}"#
        );
    }

    #[test]
    fn fields_that_do_not_fit_the_mode_are_refused_by_name() {
        assert!(
            serial(r#"{"mode":"Tty","file":"/x"}"#)
                .unwrap_err()
                .starts_with("field serial.file=Some(\"/x\") is not supported: give a file only")
        );
        assert!(serial(r#"{"mode":"Socket"}"#).unwrap_err().starts_with(
            "field serial.socket=null is not supported: mode Socket needs the socket's path"
        ));
        assert!(
            console(r#"{"mode":"Socket","socket":"/s"}"#)
                .unwrap_err()
                .starts_with("field console.mode=\"Socket\" is not supported")
        );
        assert!(
            console(r#"{"mode":"File"}"#)
                .unwrap_err()
                .starts_with("field console.file=None is not supported: mode File needs a file")
        );
    }
}
