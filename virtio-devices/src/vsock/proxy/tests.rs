//! The proxy over a fake guest: each guest port is a Unix socket in a
//! temporary directory, so the whole path (listener, CONNECT line, OK,
//! bytes both ways, half closes, refusals) runs without vhost-vsock.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use super::*;

/// The port the fake reports as the host end's.
const FAKE_HOST_PORT: u32 = 1 << 30;

impl GuestStream for UnixStream {
    fn connected(&self) -> io::Result<Option<u32>> {
        match self.take_error()? {
            Some(e) => Err(e),
            None => Ok(Some(FAKE_HOST_PORT)),
        }
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

struct FakeGuest {
    dir: PathBuf,
}

impl GuestPorts for FakeGuest {
    type Stream = UnixStream;

    fn connect(&self, port: u32) -> io::Result<UnixStream> {
        let stream = UnixStream::connect(self.dir.join(port.to_string()))?;
        stream.set_nonblocking(true)?;
        Ok(stream)
    }
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ch-vsock-{}-{:?}",
        std::process::id(),
        thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn start(dir: &std::path::Path) -> Proxy {
    Proxy::start(
        "test-proxy".into(),
        &dir.join("vsock.sock"),
        FakeGuest {
            dir: dir.to_path_buf(),
        },
    )
    .unwrap()
}

fn client(proxy: &Proxy) -> UnixStream {
    let stream = UnixStream::connect(proxy.path()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

fn read_line(stream: &UnixStream) -> String {
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line
}

/// A guest service on `port`: reads everything, answers with the bytes
/// reversed and closes.
fn reversing_guest(dir: &std::path::Path, port: u32) -> thread::JoinHandle<usize> {
    let listener = UnixListener::bind(dir.join(port.to_string())).unwrap();
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        got.reverse();
        conn.write_all(&got).unwrap();
        got.len()
    })
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn a_connect_line_is_answered_ok_and_bytes_flow_both_ways_past_the_buffers() {
    let dir = tempdir();
    let proxy = start(&dir);
    let guest = reversing_guest(&dir, 1024);
    let mut c = client(&proxy);
    c.write_all(b"CONNECT 1024\n").unwrap();
    assert_eq!(read_line(&c), format!("OK {FAKE_HOST_PORT}\n"));
    // Sixteen times a direction's buffer: the proxy must stop reading
    // while the guest is behind, and lose nothing.
    let payload = pattern(16 * super::super::conn::BUFFER);
    c.write_all(&payload).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    assert_eq!(guest.join().unwrap(), payload.len());
    let mut expected = payload;
    expected.reverse();
    assert!(back == expected, "{} bytes back", back.len());
}

#[test]
fn bytes_sent_with_the_line_reach_the_guest_after_it() {
    let dir = tempdir();
    let proxy = start(&dir);
    let guest = reversing_guest(&dir, 7);
    let mut c = client(&proxy);
    c.write_all(b"connect 7\nabc").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut all = String::new();
    c.read_to_string(&mut all).unwrap();
    assert_eq!(all, format!("OK {FAKE_HOST_PORT}\ncba"));
    assert_eq!(guest.join().unwrap(), 3);
}

#[test]
fn a_bad_line_gets_an_error_line_and_the_close() {
    let dir = tempdir();
    let proxy = start(&dir);
    let mut c = client(&proxy);
    c.write_all(b"HELLO 1\n").unwrap();
    let mut all = String::new();
    c.read_to_string(&mut all).unwrap();
    assert_eq!(
        all,
        "ERROR \"HELLO 1\" is not a command; send CONNECT <port>\\n\n"
    );
    // The proxy still serves the next client.
    let guest = reversing_guest(&dir, 9);
    let mut c = client(&proxy);
    c.write_all(b"CONNECT 9\n").unwrap();
    assert!(read_line(&c).starts_with("OK "));
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(guest.join().unwrap(), 0);
}

#[test]
fn a_port_nobody_listens_on_is_refused_naming_it() {
    let dir = tempdir();
    let proxy = start(&dir);
    let mut c = client(&proxy);
    c.write_all(b"CONNECT 5000\n").unwrap();
    let mut all = String::new();
    c.read_to_string(&mut all).unwrap();
    assert!(all.starts_with("ERROR guest port 5000: "), "{all}");
    assert!(all.ends_with('\n') && !all.contains("OK"), "{all}");
}

#[test]
fn a_client_that_leaves_mid_line_or_mid_stream_costs_nothing() {
    let dir = tempdir();
    let proxy = start(&dir);
    drop({
        let mut c = client(&proxy);
        c.write_all(b"CONN").unwrap();
        c
    });
    let listener = UnixListener::bind(dir.join("11")).unwrap();
    let mut c = client(&proxy);
    c.write_all(b"CONNECT 11\n").unwrap();
    assert!(read_line(&c).starts_with("OK "));
    let (mut guest, _) = listener.accept().unwrap();
    guest.write_all(b"from the guest").unwrap();
    drop(c);
    // The guest sees the client's end of stream.
    let mut rest = Vec::new();
    guest
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    guest.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn the_socket_path_must_be_free_and_is_removed_with_the_proxy() {
    let dir = tempdir();
    let path = dir.join("vsock.sock");
    let proxy = start(&dir);
    assert!(path.exists());
    let err = Proxy::start("again".into(), &path, FakeGuest { dir: dir.clone() })
        .err()
        .unwrap();
    assert!(matches!(err, ProxyError::PathExists(ref p) if *p == path));
    assert!(
        err.to_string()
            .starts_with(&format!("socket={}: the path exists", path.display()))
    );
    drop(proxy);
    assert!(!path.exists());
    let err = Proxy::start(
        "nodir".into(),
        &dir.join("missing/vsock.sock"),
        FakeGuest { dir: dir.clone() },
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("cannot listen there"), "{err}");
}

#[test]
fn clients_over_the_limit_are_told_and_closed() {
    let dir = tempdir();
    let proxy = start(&dir);
    let held: Vec<UnixStream> = (0..MAX_CONNECTIONS).map(|_| client(&proxy)).collect();
    // Let the proxy take all of them.
    thread::sleep(Duration::from_millis(200));
    let mut extra = client(&proxy);
    let mut all = String::new();
    extra.read_to_string(&mut all).unwrap();
    assert!(
        all.starts_with("ERROR 64 clients are connected already"),
        "{all}"
    );
    drop(held);
}

/// A guest that resets every connection once it is under way, as a guest
/// kernel with nobody on the port does.
struct ResettingGuest;

struct Reset(UnixStream);

impl Read for Reset {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Reset {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl std::os::fd::AsRawFd for Reset {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl GuestStream for Reset {
    fn connected(&self) -> io::Result<Option<u32>> {
        Err(io::ErrorKind::ConnectionReset.into())
    }

    fn shutdown_write(&self) -> io::Result<()> {
        Ok(())
    }
}

impl GuestPorts for ResettingGuest {
    type Stream = Reset;

    fn connect(&self, _port: u32) -> io::Result<Reset> {
        let (ours, _theirs) = UnixStream::pair()?;
        Ok(Reset(ours))
    }
}

#[test]
fn a_connection_the_guest_resets_is_refused_naming_the_port() {
    let dir = tempdir();
    let proxy = Proxy::start("reset".into(), &dir.join("vsock.sock"), ResettingGuest).unwrap();
    let mut c = client(&proxy);
    c.write_all(b"CONNECT 5555\n").unwrap();
    let mut all = String::new();
    c.read_to_string(&mut all).unwrap();
    assert!(
        all.starts_with("ERROR guest port 5555: the guest did not accept the connection: "),
        "{all}"
    );
}
