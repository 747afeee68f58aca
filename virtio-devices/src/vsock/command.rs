//! The one line a host client sends on cloud-hypervisor's hybrid vsock
//! socket before its bytes go to the guest: `CONNECT <port>\n` (upstream
//! also takes `connect`), answered with `OK <host port>\n` once the guest
//! accepted, or here with an error line (`ERROR <why>\n`) before the close.
//!
//! Upstream's bounds are kept: the line, newline included, fits
//! [`MAX_LINE`] bytes; the port is a decimal u32 with optional blanks
//! around it. `VMADDR_PORT_ANY` (u32::MAX) names no port and is refused.

/// Longest command line, newline included (upstream's buffer size).
pub const MAX_LINE: usize = 32;

const PREFIXES: [&[u8]; 2] = [b"CONNECT ", b"connect "];

/// What the bytes received so far say.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// No newline yet, and nothing wrong so far: read more.
    Incomplete,
    /// A whole line naming `port`; the line took `len` bytes (newline
    /// included), whatever follows is the client's first data.
    Connect {
        /// The guest port.
        port: u32,
        /// Bytes of the line.
        len: usize,
    },
    /// Not a command this socket takes: why, for the error line.
    Bad(String),
}

/// Parse the start of what a client sent.
pub fn parse(buf: &[u8]) -> Command {
    let newline = buf.iter().position(|b| *b == b'\n');
    let head = &buf[..newline.unwrap_or(buf.len()).min(PREFIXES[0].len())];
    if !PREFIXES.iter().any(|p| p.starts_with(head)) {
        return bad_line(buf, newline);
    }
    let Some(end) = newline else {
        if buf.len() >= MAX_LINE {
            return Command::Bad(format!(
                "no newline within {MAX_LINE} bytes; send CONNECT <port>\\n"
            ));
        }
        return Command::Incomplete;
    };
    if end + 1 > MAX_LINE {
        return Command::Bad(format!(
            "the line is longer than {MAX_LINE} bytes; send CONNECT <port>\\n"
        ));
    }
    let Some(arg) = buf[..end].get(PREFIXES[0].len()..) else {
        if PREFIXES.iter().any(|p| p.trim_ascii_end() == &buf[..end]) {
            return Command::Bad("CONNECT needs a port: send CONNECT <port>\\n".into());
        }
        return bad_line(buf, newline);
    };
    let text = String::from_utf8_lossy(arg);
    match text.trim().parse::<u32>() {
        Ok(port) if port != u32::MAX => Command::Connect { port, len: end + 1 },
        _ => Command::Bad(format!(
            "port {:?} is not a vsock port (a decimal number below 4294967295)",
            text.trim()
        )),
    }
}

fn bad_line(buf: &[u8], newline: Option<usize>) -> Command {
    let line = &buf[..newline.unwrap_or(buf.len()).min(MAX_LINE)];
    Command::Bad(format!(
        "{:?} is not a command; send CONNECT <port>\\n",
        String::from_utf8_lossy(line)
    ))
}

/// The line a refused client reads before the close. It never contains
/// `OK`, which is what clients (Kata's) look for to tell success.
pub fn error_line(why: &str) -> Vec<u8> {
    format!("ERROR {}\n", why.replace("OK", "ok").replace('\n', " ")).into_bytes()
}

/// The line an accepted client reads: upstream's `OK <host port>\n`.
pub fn ok_line(host_port: u32) -> Vec<u8> {
    format!("OK {host_port}\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_line_names_the_port_and_its_length() {
        assert_eq!(
            parse(b"CONNECT 1024\n"),
            Command::Connect {
                port: 1024,
                len: 13
            }
        );
        assert_eq!(
            parse(b"connect  52 \nhello"),
            Command::Connect { port: 52, len: 13 }
        );
        assert_eq!(
            parse(b"CONNECT 4294967294\n"),
            Command::Connect {
                port: u32::MAX - 1,
                len: 19
            }
        );
    }

    #[test]
    fn a_partial_line_waits_for_more() {
        for partial in [
            &b""[..],
            b"C",
            b"CONN",
            b"CONNECT ",
            b"CONNECT 10",
            b"connect 9",
        ] {
            assert_eq!(parse(partial), Command::Incomplete, "{partial:?}");
        }
    }

    #[test]
    fn anything_else_is_refused_naming_what_was_sent() {
        let bad = |input: &[u8]| match parse(input) {
            Command::Bad(why) => why,
            other => panic!("{input:?}: {other:?}"),
        };
        assert!(bad(b"GET / HTTP/1.1\r\n").starts_with("\"GET / HT"));
        assert!(bad(b"CONNEC\n").contains("is not a command"));
        assert!(bad(b"CONNECT\n").starts_with("CONNECT needs a port"));
        assert!(bad(b"CONNECT \n").contains("port \"\" is not a vsock port"));
        assert!(bad(b"CONNECT abc\n").contains("port \"abc\""));
        assert!(bad(b"CONNECT -1\n").contains("port \"-1\""));
        assert!(bad(b"CONNECT 4294967295\n").contains("port \"4294967295\""));
        assert!(bad(b"CONNECT 99999999999\n").contains("not a vsock port"));
        assert!(bad(&[b'C'; 3]).contains("is not a command"));
        let long = format!("CONNECT {}", "1".repeat(40));
        assert!(bad(long.as_bytes()).starts_with("no newline within 32 bytes"));
        let long_line = format!("CONNECT {}7\n", " ".repeat(30));
        assert!(bad(long_line.as_bytes()).starts_with("the line is longer"));
        assert!(bad(b"\xff\xfe\n").contains("is not a command"));
    }

    #[test]
    fn reply_lines_follow_upstream_and_errors_never_read_as_success() {
        assert_eq!(ok_line(1073741824), b"OK 1073741824\n");
        let line = error_line("port 7: OK?\nno");
        assert_eq!(line, b"ERROR port 7: ok? no\n");
        assert!(!String::from_utf8(line).unwrap().contains("OK"));
    }
}
