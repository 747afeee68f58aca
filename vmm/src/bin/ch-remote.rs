//! `ch-remote`: drive a running cloud-hypervisor through its API socket,
//! with every sub-command of cloud-hypervisor v53.0's ch-remote and its
//! argument syntax (`add-disk path=...`, `resize --cpus N --memory M`,
//! `send-migration destination_url=...,local=on`); those the VMM does not
//! implement print its refusal and exit 1. A successful command prints the
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
use vmm::api::types::VmRemoveDeviceData;
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
    /// Add virtio-blk device (refused: not implemented yet)
    #[command(name = "add-disk")]
    AddDisk {
        /// "path=<disk_image_path>,readonly=on|off,..." (cloud-hypervisor's --disk syntax)
        disk_config: String,
    },
    /// Add virtio-fs device (refused: not implemented yet)
    #[command(name = "add-fs")]
    AddFs {
        /// "tag=<tag_name>,socket=<socket_path>,..." (cloud-hypervisor's --fs syntax)
        fs_config: String,
    },
    /// Add generic vhost-user device (refused: not implemented yet)
    #[command(name = "add-generic-vhost-user")]
    AddGenericVhostUser {
        /// "socket=<socket_path>,virtio_id=<id>,..." (cloud-hypervisor's syntax)
        generic_vhost_user_config: String,
    },
    /// Add network device (refused: not implemented yet)
    #[command(name = "add-net")]
    AddNet {
        /// "tap=<if_name>,mac=<mac>,..." (cloud-hypervisor's --net syntax)
        net_config: String,
    },
    /// Add persistent memory device (refused: not implemented)
    #[command(name = "add-pmem")]
    AddPmem {
        /// "file=<backing_file_path>,size=<size>,..." (cloud-hypervisor's --pmem syntax)
        pmem_config: String,
    },
    /// Add userspace device (refused: not implemented)
    #[command(name = "add-user-device")]
    AddUserDevice {
        /// "socket=<socket_path>,id=<device_id>,pci_segment=<segment_id>"
        device_config: String,
    },
    /// Add vDPA device (refused: not implemented)
    #[command(name = "add-vdpa")]
    AddVdpa {
        /// "path=<device_path>,num_queues=<n>,..." (cloud-hypervisor's --vdpa syntax)
        vdpa_config: String,
    },
    /// Add a vsock device (before boot)
    #[command(name = "add-vsock")]
    AddVsock {
        /// "cid=<context_id>,socket=<socket_path>,..." (cloud-hypervisor's --vsock syntax)
        vsock_config: String,
    },
    /// Boot a created VM
    Boot,
    /// Create a coredump from VM (refused: not implemented)
    Coredump {
        /// <file_path>
        coredump_config: String,
    },
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
    /// Trigger NMI (refused: not implemented)
    Nmi,
    /// Pause the VM
    Pause,
    /// Ping the VMM to check for API server availability
    Ping,
    /// Trigger a power button in the VM
    #[command(name = "power-button")]
    PowerButton,
    /// Reboot the VM
    Reboot,
    /// Receive a VM migration (refused: not implemented)
    #[command(name = "receive-migration")]
    ReceiveMigration {
        /// "<receiver_url>" or "receiver_url=<url>[,tls_dir=<path>][,memory_mode=precopy|postcopy]"
        receive_migration_config: String,
    },
    /// Remove VFIO and PCI device
    #[command(name = "remove-device")]
    RemoveDevice {
        /// <device_id>
        id: String,
    },
    /// Resize the VM (refused: hot-plug is not implemented)
    Resize {
        /// New balloon size in bytes (supports K/M/G suffix)
        #[arg(long)]
        balloon: Option<String>,
        /// New vCPUs count
        #[arg(long)]
        cpus: Option<String>,
        /// New memory size in bytes (supports K/M/G suffix)
        #[arg(long)]
        memory: Option<String>,
    },
    /// Resize a disk (refused: no virtio-blk yet)
    #[command(name = "resize-disk")]
    ResizeDisk {
        /// Disk identifier
        #[arg(long)]
        disk: String,
        /// New disk size
        #[arg(long)]
        size: String,
    },
    /// Resize a memory zone (refused: not implemented)
    #[command(name = "resize-zone")]
    ResizeZone {
        /// Memory zone identifier
        #[arg(long)]
        id: String,
        /// New memory zone size in bytes (supports K/M/G suffix)
        #[arg(long)]
        size: String,
    },
    /// Restore VM from a snapshot (refused: not implemented)
    Restore {
        /// "source_url=<source_url>[,prefault=on|off,...]"
        restore_config: String,
    },
    /// Resume the VM
    Resume,
    /// Send a VM migration (refused: a vSMMU's host state cannot move)
    #[command(name = "send-migration")]
    SendMigration {
        /// "destination_url=<url>[,local=on|off,downtime_ms=<ms>,...]" (a bare URL works too)
        send_migration_config: String,
    },
    /// Shutdown the VM
    Shutdown,
    /// Shutdown the VMM
    #[command(name = "shutdown-vmm")]
    ShutdownVmm,
    /// Create a snapshot from VM (refused: a vSMMU's host state cannot be saved)
    Snapshot {
        /// <destination_url>
        snapshot_config: String,
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

/// cloud-hypervisor's `key=value,...` option syntax as the JSON object its
/// ch-remote sends: `on`/`off` become booleans, whole numbers (with a
/// K/M/G suffix for sizes) numbers, the rest strings. A bare first word is
/// the value of `primary` (`receive-migration unix:/tmp/m`).
fn options_json(input: &str, primary: &str) -> Result<String, Error> {
    let mut object = serde_json::Map::new();
    for (index, part) in input.split(',').filter(|p| !p.is_empty()).enumerate() {
        let (key, value) = match part.split_once('=') {
            Some((key, value)) => (key, value),
            None if index == 0 => (primary, part),
            None => {
                return Err(Error::Argument(format!(
                    "'{part}' is not key=value (in '{input}')"
                )));
            }
        };
        let value = match value {
            "on" | "true" => serde_json::Value::Bool(true),
            "off" | "false" => serde_json::Value::Bool(false),
            _ => match parse_size(value) {
                Some(n) => n.into(),
                None => value.into(),
            },
        };
        object.insert(key.to_string(), value);
    }
    Ok(serde_json::Value::Object(object).to_string())
}

/// A whole number with an optional K/M/G suffix (powers of 1024).
fn parse_size(text: &str) -> Option<u64> {
    let (digits, shift) = match text.as_bytes().last()? {
        b'K' => (&text[..text.len() - 1], 10),
        b'M' => (&text[..text.len() - 1], 20),
        b'G' => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

fn size_arg(name: &str, text: &str) -> Result<u64, Error> {
    parse_size(text).ok_or_else(|| {
        Error::Argument(format!(
            "--{name} {text} is not a size; give bytes, optionally with K, M or G"
        ))
    })
}

/// The JSON body of `resize`.
fn resize_body(
    cpus: Option<&str>,
    memory: Option<&str>,
    balloon: Option<&str>,
) -> Result<String, Error> {
    let mut body = serde_json::Map::new();
    if let Some(cpus) = cpus {
        let count: u32 = cpus
            .parse()
            .map_err(|_| Error::Argument(format!("--cpus {cpus} is not a number of vCPUs")))?;
        body.insert("desired_vcpus".into(), count.into());
    }
    if let Some(memory) = memory {
        body.insert("desired_ram".into(), size_arg("memory", memory)?.into());
    }
    if let Some(balloon) = balloon {
        body.insert(
            "desired_balloon".into(),
            size_arg("balloon", balloon)?.into(),
        );
    }
    Ok(serde_json::Value::Object(body).to_string())
}

/// Method, endpoint and body of a sub-command.
fn request(command: &Command) -> Result<(&'static str, &'static str, Option<String>), Error> {
    let json = |value: serde_json::Value| Some(value.to_string());
    Ok(match command {
        Command::AddDisk { disk_config } => (
            "PUT",
            "vm.add-disk",
            Some(options_json(disk_config, "path")?),
        ),
        Command::AddFs { fs_config } => ("PUT", "vm.add-fs", Some(options_json(fs_config, "tag")?)),
        Command::AddGenericVhostUser {
            generic_vhost_user_config,
        } => (
            "PUT",
            "vm.add-generic-vhost-user",
            Some(options_json(generic_vhost_user_config, "socket")?),
        ),
        Command::AddNet { net_config } => {
            ("PUT", "vm.add-net", Some(options_json(net_config, "tap")?))
        }
        Command::AddPmem { pmem_config } => (
            "PUT",
            "vm.add-pmem",
            Some(options_json(pmem_config, "file")?),
        ),
        Command::AddUserDevice { device_config } => (
            "PUT",
            "vm.add-user-device",
            Some(options_json(device_config, "socket")?),
        ),
        Command::AddVdpa { vdpa_config } => (
            "PUT",
            "vm.add-vdpa",
            Some(options_json(vdpa_config, "path")?),
        ),
        Command::AddVsock { vsock_config } => {
            let config = vmm::config::VsockConfig::parse(vsock_config)
                .map_err(|e| Error::Argument(e.to_string()))?;
            let body =
                serde_json::to_string(&config).map_err(|e| Error::Argument(e.to_string()))?;
            ("PUT", "vm.add-vsock", Some(body))
        }
        Command::Coredump { coredump_config } => (
            "PUT",
            "vm.coredump",
            json(serde_json::json!({ "destination_url": coredump_config })),
        ),
        Command::Nmi => ("PUT", "vm.nmi", None),
        Command::Resize {
            balloon,
            cpus,
            memory,
        } => (
            "PUT",
            "vm.resize",
            Some(resize_body(
                cpus.as_deref(),
                memory.as_deref(),
                balloon.as_deref(),
            )?),
        ),
        Command::ResizeDisk { disk, size } => (
            "PUT",
            "vm.resize-disk",
            json(serde_json::json!({ "id": disk, "desired_size": size_arg("size", size)? })),
        ),
        Command::ResizeZone { id, size } => (
            "PUT",
            "vm.resize-zone",
            json(serde_json::json!({ "id": id, "desired_ram": size_arg("size", size)? })),
        ),
        Command::Restore { restore_config } => (
            "PUT",
            "vm.restore",
            Some(options_json(restore_config, "source_url")?),
        ),
        Command::AddDevice { device_config } => {
            let mut device = DeviceConfig::parse(device_config, 0)
                .map_err(|e| Error::Argument(e.to_string()))?;
            // A generated id is the VMM's to choose (the next free one).
            if device.id.starts_with('_') {
                device.id.clear();
            }
            let body =
                serde_json::to_string(&device).map_err(|e| Error::Argument(e.to_string()))?;
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
        Command::ReceiveMigration {
            receive_migration_config,
        } => (
            "PUT",
            "vm.receive-migration",
            Some(options_json(receive_migration_config, "receiver_url")?),
        ),
        Command::RemoveDevice { id } => {
            let body = serde_json::to_string(&VmRemoveDeviceData { id: id.clone() })
                .map_err(|e| Error::Argument(e.to_string()))?;
            ("PUT", "vm.remove-device", Some(body))
        }
        Command::Resume => ("PUT", "vm.resume", None),
        Command::SendMigration {
            send_migration_config,
        } => (
            "PUT",
            "vm.send-migration",
            Some(options_json(send_migration_config, "destination_url")?),
        ),
        Command::Shutdown => ("PUT", "vm.shutdown", None),
        Command::ShutdownVmm => ("PUT", "vmm.shutdown", None),
        Command::Snapshot { snapshot_config } => (
            "PUT",
            "vm.snapshot",
            json(serde_json::json!({ "destination_url": snapshot_config })),
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
    // One request per connection: the server closes after the answer.
    let mut head = format!(
        "{method} /api/v1/{endpoint} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\
         Connection: close\r\n"
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn body(args: &[&str]) -> (&'static str, Option<serde_json::Value>) {
        let cli = Cli::try_parse_from(
            ["ch-remote", "--api-socket", "/s"]
                .iter()
                .chain(args.iter()),
        )
        .unwrap();
        let (_, endpoint, body) = request(&cli.command).unwrap();
        (endpoint, body.map(|b| serde_json::from_str(&b).unwrap()))
    }

    #[test]
    fn upstream_option_strings_become_upstream_json_bodies() {
        assert_eq!(
            body(&["add-disk", "path=/d.img,readonly=on,num_queues=2"]),
            (
                "vm.add-disk",
                Some(serde_json::json!({"path": "/d.img", "readonly": true, "num_queues": 2}))
            )
        );
        assert_eq!(
            body(&["resize", "--cpus", "4", "--memory", "2G"]),
            (
                "vm.resize",
                Some(serde_json::json!({"desired_vcpus": 4, "desired_ram": 2u64 << 30}))
            )
        );
        assert_eq!(
            body(&["send-migration", "destination_url=unix:/m,local=on"]),
            (
                "vm.send-migration",
                Some(serde_json::json!({"destination_url": "unix:/m", "local": true}))
            )
        );
        assert_eq!(
            body(&["receive-migration", "unix:/m"]),
            (
                "vm.receive-migration",
                Some(serde_json::json!({"receiver_url": "unix:/m"}))
            )
        );
        assert_eq!(
            body(&["resize-zone", "--id", "mem0", "--size", "1M"]),
            (
                "vm.resize-zone",
                Some(serde_json::json!({"id": "mem0", "desired_ram": 1 << 20}))
            )
        );
        assert_eq!(body(&["nmi"]), ("vm.nmi", None));
    }

    #[test]
    fn bad_arguments_are_refused_before_any_request() {
        let cli = Cli::try_parse_from(["ch-remote", "--api-socket", "/s", "resize", "--cpus", "x"])
            .unwrap();
        assert!(matches!(request(&cli.command), Err(Error::Argument(_))));
        let cli = Cli::try_parse_from(["ch-remote", "--api-socket", "/s", "add-net", "tap=t,junk"])
            .unwrap();
        assert!(matches!(request(&cli.command), Err(Error::Argument(_))));
    }
}
