//! `ch-remote`: drive a running cloud-hypervisor through its API socket,
//! with cloud-hypervisor's sub-commands. A successful command prints the
//! JSON the VMM answered (nothing for 204) and exits 0; a refusal prints
//! the status and the VMM's message and exits 1.
//!
//! The HTTP client is a few lines of HTTP/1.1 over a `UnixStream`, the
//! response framed with `httparse` (the parser the VMM's server uses): one
//! request per connection, as the server closes after each answer.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vmm::api::types::{ApiDeviceConfig, VmRemoveDeviceData};
use vmm::config::{DEVICE_SYNTAX, DeviceConfig};

/// An answer larger than this is refused (the VMM's are a few KiB).
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// How long the VMM gets to answer (a boot or a teardown can take a while).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Parser, Debug)]
#[command(
    name = "ch-remote",
    version = vmm::api::CH_VERSION_STRING,
    about = "Remotely control a cloud-hypervisor VMM.",
    arg_required_else_help = true
)]
struct Cli {
    /// HTTP API socket path (UNIX domain socket).
    #[arg(long = "api-socket", value_name = "PATH")]
    api_socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Add VFIO device
    #[command(name = "add-device")]
    AddDevice {
        #[arg(help = DEVICE_SYNTAX)]
        device_config: String,
    },
    /// Boot a created VM
    Boot,
    /// Counters from the VM
    Counters,
    /// Create VM from a JSON configuration
    Create {
        /// JSON file with the VmConfig, or - for stdin.
        #[arg(default_value = "-")]
        path: String,
    },
    /// Delete a VM
    Delete,
    /// Info on the VM
    Info,
    /// Pause the VM
    Pause,
    /// Ping the VMM to check for API server availability
    Ping,
    /// Trigger a power button in the VM
    #[command(name = "power-button")]
    PowerButton,
    /// Reboot the VM
    Reboot,
    /// Receive a VM migration
    #[command(name = "receive-migration")]
    ReceiveMigration {
        /// <receiver_url>
        receiver_url: String,
    },
    /// Remove VFIO and PCI device
    #[command(name = "remove-device")]
    RemoveDevice {
        /// <device_id>
        id: String,
    },
    /// Resume the VM
    Resume,
    /// Send a VM migration
    #[command(name = "send-migration")]
    SendMigration {
        /// <destination_url>
        destination_url: String,
    },
    /// Shutdown the VM
    Shutdown,
    /// Shutdown the VMM
    #[command(name = "shutdown-vmm")]
    ShutdownVmm,
    /// Create a snapshot from VM
    Snapshot {
        /// <destination_url>
        destination_url: String,
    },
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("cannot talk to the API socket: {0}")]
    Socket(std::io::Error),
    #[error("the VMM's answer is not HTTP: {0}")]
    Response(String),
    #[error("the VMM's answer exceeds {MAX_RESPONSE_BYTES} bytes")]
    ResponseTooLarge,
    #[error("{0}")]
    Argument(String),
    #[error("Server responded with {status}: {message}")]
    Server { status: u16, message: String },
}

/// Method, endpoint and body of a sub-command.
fn request(command: &Command) -> Result<(&'static str, &'static str, Option<String>), Error> {
    let json = |value: serde_json::Value| Some(value.to_string());
    Ok(match command {
        Command::AddDevice { device_config } => {
            let device = DeviceConfig::parse(device_config, 0)
                .map_err(|e| Error::Argument(e.to_string()))?;
            let body = ApiDeviceConfig {
                path: device.path,
                iommu: device.iommu,
                id: Some(device.id).filter(|id| !id.starts_with('_')),
                pci_segment: device.pci_segment,
            };
            let body = serde_json::to_string(&body).map_err(|e| Error::Argument(e.to_string()))?;
            ("PUT", "vm.add-device", Some(body))
        }
        Command::Boot => ("PUT", "vm.boot", None),
        Command::Counters => ("GET", "vm.counters", None),
        Command::Create { path } => {
            let mut body = String::new();
            let read = if path == "-" {
                std::io::stdin().read_to_string(&mut body)
            } else {
                std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut body))
            };
            read.map_err(|e| Error::Argument(format!("cannot read {path}: {e}")))?;
            ("PUT", "vm.create", Some(body))
        }
        Command::Delete => ("PUT", "vm.delete", None),
        Command::Info => ("GET", "vm.info", None),
        Command::Pause => ("PUT", "vm.pause", None),
        Command::Ping => ("GET", "vmm.ping", None),
        Command::PowerButton => ("PUT", "vm.power-button", None),
        Command::Reboot => ("PUT", "vm.reboot", None),
        Command::ReceiveMigration { receiver_url } => (
            "PUT",
            "vm.receive-migration",
            json(serde_json::json!({ "receiver_url": receiver_url })),
        ),
        Command::RemoveDevice { id } => {
            let body = serde_json::to_string(&VmRemoveDeviceData { id: id.clone() })
                .map_err(|e| Error::Argument(e.to_string()))?;
            ("PUT", "vm.remove-device", Some(body))
        }
        Command::Resume => ("PUT", "vm.resume", None),
        Command::SendMigration { destination_url } => (
            "PUT",
            "vm.send-migration",
            json(serde_json::json!({ "destination_url": destination_url })),
        ),
        Command::Shutdown => ("PUT", "vm.shutdown", None),
        Command::ShutdownVmm => ("PUT", "vmm.shutdown", None),
        Command::Snapshot { destination_url } => (
            "PUT",
            "vm.snapshot",
            json(serde_json::json!({ "destination_url": destination_url })),
        ),
    })
}

/// Send one request and return the answer's body (None for 204).
fn call(
    socket: &Path,
    method: &str,
    endpoint: &str,
    body: Option<&str>,
) -> Result<Option<String>, Error> {
    let mut stream = UnixStream::connect(socket).map_err(Error::Socket)?;
    stream
        .set_read_timeout(Some(RESPONSE_TIMEOUT))
        .map_err(Error::Socket)?;
    let mut head =
        format!("{method} /api/v1/{endpoint} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n");
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).map_err(Error::Socket)?;
    if let Some(body) = body {
        stream.write_all(body.as_bytes()).map_err(Error::Socket)?;
    }
    // The server answers and closes: read to the end, bounded.
    let mut answer = Vec::new();
    stream
        .take(MAX_RESPONSE_BYTES as u64 + 1)
        .read_to_end(&mut answer)
        .map_err(Error::Socket)?;
    if answer.len() > MAX_RESPONSE_BYTES {
        return Err(Error::ResponseTooLarge);
    }
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let body_start = match response.parse(&answer) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err(Error::Response("the connection closed mid-answer".into()));
        }
        Err(e) => return Err(Error::Response(e.to_string())),
    };
    let status = response.code.unwrap_or(0);
    let body = String::from_utf8_lossy(&answer[body_start..]).into_owned();
    if !(200..300).contains(&status) {
        // cloud-hypervisor's error body: a list of messages.
        let message = serde_json::from_str::<Vec<String>>(&body)
            .map(|lines| lines.join(": "))
            .unwrap_or(body);
        return Err(Error::Server { status, message });
    }
    Ok(Some(body).filter(|b| !b.is_empty()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = request(&cli.command).and_then(|(method, endpoint, body)| {
        call(&cli.api_socket, method, endpoint, body.as_deref())
    });
    match result {
        Ok(Some(body)) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("Error: ch-remote: {err}");
            ExitCode::FAILURE
        }
    }
}
