//! The filters compile for both architectures, hold the stacking rule,
//! and, installed in a real thread of a child process, refuse what they
//! should: the child is this test binary run again with
//! `VMM_SECCOMP_TEST_CHILD` set (test builds only; nothing a guest or an
//! API client controls reaches it).

use super::rules::{self, Args, Ioctl};
use super::*;

const CHILD_ENV: &str = "VMM_SECCOMP_TEST_CHILD";

#[test]
fn every_filter_compiles_for_x86_64_and_aarch64() {
    for arch in [TargetArch::x86_64, TargetArch::aarch64] {
        for mode in [SeccompMode::Enforce, SeccompMode::Log] {
            let programs = compile(mode, arch).unwrap_or_else(|e| panic!("{arch:?}: {e}"));
            for kind in ThreadKind::ALL {
                let program = &programs[kind.name()];
                assert!(!program.is_empty(), "{arch:?} {kind:?}");
                // The classic BPF limit a filter must fit in.
                assert!(program.len() < 4096, "{arch:?} {kind:?}: {}", program.len());
            }
        }
    }
}

/// Whether `list` allows every call `sub` allows.
fn covers(list: &std::collections::BTreeMap<&str, Args>, name: &str, args: &Args) -> bool {
    match (list.get(name), args) {
        (Some(Args::Any), _) => true,
        (Some(Args::NoExec), Args::NoExec) => true,
        (Some(Args::FirstArg(allowed)), Args::FirstArg(wanted)) => {
            wanted.iter().all(|w| allowed.contains(w))
        }
        (Some(Args::Ioctls(allowed)), Args::Ioctls(wanted)) => wanted.iter().all(|w| {
            allowed.iter().any(|a| match (*a, *w) {
                (Ioctl::Family(f), Ioctl::Exact(nr)) => (nr >> 8) & 0xff == u32::from(f),
                (a, w) => a == w,
            })
        }),
        _ => false,
    }
}

#[test]
fn threads_spawned_by_the_filtered_vmm_thread_need_nothing_it_refuses() {
    for arch in [TargetArch::x86_64, TargetArch::aarch64] {
        let vmm = rules::allowed(ThreadKind::Vmm, arch);
        for kind in [
            ThreadKind::Vcpu,
            ThreadKind::VcmdqEngine,
            ThreadKind::ConsoleIn,
            ThreadKind::VirtioWorker,
            ThreadKind::VsockProxy,
        ] {
            for (name, args) in rules::allowed(kind, arch) {
                assert!(
                    covers(&vmm, name, &args),
                    "{arch:?}: the vmm filter refuses {kind:?}'s {name} {args:?}"
                );
            }
        }
    }
}

#[test]
fn only_the_vmm_thread_makes_io_uring_rings_and_only_it_and_virtio_workers_enter_them() {
    for arch in [TargetArch::x86_64, TargetArch::aarch64] {
        for kind in ThreadKind::ALL {
            let list = rules::allowed(kind, arch);
            let makes = kind == ThreadKind::Vmm;
            for name in ["io_uring_setup", "io_uring_register"] {
                assert_eq!(list.contains_key(name), makes, "{arch:?} {kind:?} {name}");
            }
            let enters = matches!(kind, ThreadKind::Vmm | ThreadKind::VirtioWorker);
            assert_eq!(
                list.contains_key("io_uring_enter"),
                enters,
                "{arch:?} {kind:?} io_uring_enter"
            );
        }
    }
}

#[test]
fn no_thread_execs_or_forks_only_the_vsock_proxy_connects_the_vmm_listens_and_vcpus_open_nothing() {
    let forbidden_everywhere = [
        rules::NEVER_ALLOWED,
        "execve",
        "execveat",
        "fork",
        "vfork",
        "ptrace",
        "mount",
        "kexec_load",
        "init_module",
        "finit_module",
        "setuid",
        "process_vm_writev",
    ];
    for arch in [TargetArch::x86_64, TargetArch::aarch64] {
        for kind in ThreadKind::ALL {
            let list = rules::allowed(kind, arch);
            for name in forbidden_everywhere {
                assert!(!list.contains_key(name), "{kind:?} allows {name}");
            }
            for name in ["mmap", "mprotect"] {
                assert_eq!(list.get(name), Some(&Args::NoExec), "{kind:?} {name}");
            }
            // Only the VMM thread makes sockets it listens on (the serial
            // and hybrid vsock sockets), an IPv4 one to configure a tap,
            // and (for the proxy it starts) AF_VSOCK; the vsock proxy
            // makes AF_VSOCK sockets and connects them, nothing else.
            match kind {
                ThreadKind::Vmm => assert_eq!(
                    list.get("socket"),
                    Some(&Args::FirstArg(&[
                        libc::AF_UNIX as u64,
                        libc::AF_INET as u64,
                        libc::AF_VSOCK as u64
                    ])),
                    "{kind:?} socket"
                ),
                ThreadKind::VsockProxy => {
                    assert_eq!(
                        list.get("socket"),
                        Some(&Args::FirstArg(&[libc::AF_VSOCK as u64])),
                        "{kind:?} socket"
                    );
                    for name in ["bind", "listen"] {
                        assert!(!list.contains_key(name), "{kind:?} allows {name}");
                    }
                }
                _ => {
                    for name in ["socket", "bind", "listen", "connect"] {
                        assert!(!list.contains_key(name), "{kind:?} allows {name}");
                    }
                }
            }
            if kind != ThreadKind::Vmm {
                for name in ["open", "openat", "openat2", "creat", "clone", "clone3"] {
                    assert!(!list.contains_key(name), "{kind:?} allows {name}");
                }
            }
        }
    }
}

#[test]
fn ioctl_numbers_are_the_kernels() {
    // include/uapi/linux/kvm.h, as `strace -X raw` prints them.
    assert_eq!(rules::KVM_RUN, 0xae80);
    assert_eq!(rules::KVM_GET_ONE_REG, 0x4010_aeab);
    assert_eq!(rules::KVM_SET_ONE_REG, 0x4010_aeac);
    assert_eq!(rules::KVM_SET_USER_MEMORY_REGION, 0x4020_ae46);
    assert_eq!(rules::KVM_IRQ_LINE, 0x4008_ae61);
    assert_eq!(rules::KVM_SET_GSI_ROUTING, 0x4008_ae6a);
    assert_eq!(rules::KVM_IRQFD, 0x4020_ae76);
    assert_eq!(rules::KVM_SIGNAL_MSI, 0x4020_aea5);
    assert_eq!(rules::KVM_IOEVENTFD, 0x4040_ae79);
    // include/uapi/linux/fs.h.
    assert_eq!(rules::BLKDISCARD, 0x1277);
    assert_eq!(rules::BLKZEROOUT, 0x127f);
    // asm-generic/ioctls.h, the same on x86_64 and arm64.
    assert_eq!(rules::FIONBIO, 0x5421);
    assert_eq!(rules::TCGETS, 0x5401);
    // include/uapi/linux/sockios.h.
    assert_eq!(rules::SIOCGIFFLAGS, 0x8913);
    assert_eq!(rules::SIOCSIFFLAGS, 0x8914);
    assert_eq!(rules::SIOCSIFADDR, 0x8916);
    assert_eq!(rules::SIOCSIFNETMASK, 0x891c);
    // include/uapi/linux/if_tun.h: _IOW('T', 208 and 217, int).
    assert_eq!(rules::TUNSETOFFLOAD, 0x4004_54d0);
    assert_eq!(rules::TUNSETQUEUE, 0x4004_54d9);
}

#[test]
fn the_option_parses_cloud_hypervisors_values() {
    assert_eq!(SeccompMode::parse("true"), Ok(SeccompMode::Enforce));
    assert_eq!(SeccompMode::parse("log"), Ok(SeccompMode::Log));
    assert_eq!(SeccompMode::parse("false"), Ok(SeccompMode::Off));
    assert!(
        SeccompMode::parse("on")
            .unwrap_err()
            .contains("true, false or log")
    );
    assert_eq!(SeccompMode::default(), SeccompMode::Enforce);
}

#[test]
fn the_sigsys_line_prints_the_syscall_number() {
    assert_eq!(decimal(0, &mut [0; 12]), b"0");
    assert_eq!(decimal(173, &mut [0; 12]), b"173");
    assert_eq!(decimal(i32::MIN, &mut [0; 12]), b"-2147483648");
}

/// The tests that install filters, each in a child process. The aarch64
/// lane skips them (scripts/test.sh): qemu-user implements no seccomp.
mod in_child {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    use super::super::*;
    use super::CHILD_ENV;

    /// What the child thread does once filtered.
    #[derive(Clone, Copy, Debug)]
    enum Probe {
        /// Its ordinary work, then exit normally.
        Allowed,
        /// The syscall no filter allows.
        Forbidden,
        /// mmap of executable memory.
        ExecMap,
        /// Open a file.
        Open,
        /// Not a probe: start the emulated backend's real engine thread.
        RealEngine,
        /// Not a probe: the thread starts under the VMM thread's filter.
        Stacked,
        /// Not a probe: a real virtio-blk function serves a read through
        /// its io_uring.
        RealVirtio,
        /// Not a probe: it serves a write with `_disable_io_uring=on`
        /// (pwrite64; what a buffered image's writes use with io_uring
        /// too, on file systems where io_uring would punt them).
        RealVirtioSync,
        /// Not a probe: a virtio-net function over a new tap is built.
        RealNet,
        /// Not a probe: a vsock proxy serves a client under its filter.
        RealVsockProxy,
    }

    fn probe_name(probe: Probe) -> &'static str {
        match probe {
            Probe::Allowed => "allowed",
            Probe::Forbidden => "forbidden",
            Probe::ExecMap => "exec-map",
            Probe::Open => "open",
            Probe::RealEngine => "real-engine",
            Probe::Stacked => "stacked",
            Probe::RealVirtio => "real-virtio",
            Probe::RealVirtioSync => "real-virtio-sync",
            Probe::RealNet => "real-net",
            Probe::RealVsockProxy => "real-vsock-proxy",
        }
    }

    /// Run the child with `kind`, `mode`, `probe`: (exit status, output).
    fn run_child(kind: ThreadKind, mode: &str, probe: Probe) -> (std::process::ExitStatus, String) {
        let exe = std::env::current_exe().unwrap();
        let out = Command::new(exe)
            .args([
                "--exact",
                "seccomp::tests::in_child::child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                CHILD_ENV,
                format!("{}:{mode}:{}", kind.name(), probe_name(probe)),
            )
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status, text)
    }

    /// Not a test on its own: the body of the child process.
    #[test]
    fn child_process() {
        let Ok(spec) = std::env::var(CHILD_ENV) else {
            return;
        };
        let mut parts = spec.split(':');
        let (kind, mode, probe) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let kind = ThreadKind::ALL
            .into_iter()
            .find(|k| k.name() == kind)
            .unwrap();
        init(SeccompMode::parse(mode).unwrap()).unwrap();
        if probe == "real-engine" {
            return real_engine();
        }
        if probe == "real-virtio" {
            return real_virtio("", false);
        }
        if probe == "real-virtio-sync" {
            return real_virtio(",_disable_io_uring=on", true);
        }
        if probe == "real-net" {
            return real_net();
        }
        if probe == "real-vsock-proxy" {
            return real_vsock_proxy();
        }
        if probe == "stacked" {
            return stacked(kind);
        }
        let probe = probe.to_string();
        let thread = std::thread::Builder::new()
            .name(kind.name().into())
            .spawn(move || {
                apply(kind).unwrap();
                // Ordinary work of every thread: allocate, lock, sleep, log.
                let v = vec![0u8; 1 << 20];
                let m = std::sync::Mutex::new(v.len());
                drop(m.lock().unwrap());
                std::thread::sleep(std::time::Duration::from_millis(1));
                eprintln!("filtered {}", kind.name());
                match probe.as_str() {
                    "forbidden" => {
                        // SAFETY: getppid has no argument and changes nothing.
                        let _ = unsafe { libc::getppid() };
                    }
                    "exec-map" => {
                        // SAFETY: a fresh anonymous mapping, unmapped below.
                        let addr = unsafe {
                            libc::mmap(
                                std::ptr::null_mut(),
                                4096,
                                libc::PROT_READ | libc::PROT_EXEC,
                                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                                -1,
                                0,
                            )
                        };
                        if addr != libc::MAP_FAILED {
                            // SAFETY: the mapping made above.
                            unsafe { libc::munmap(addr, 4096) };
                        }
                    }
                    "open" => {
                        let _ = std::fs::File::open("/dev/null");
                    }
                    _ => {}
                }
                eprintln!("survived {}", kind.name());
            })
            .unwrap();
        thread.join().unwrap();
        eprintln!("child exits");
    }

    /// A thread of `kind` spawned by a thread already under the VMM
    /// thread's filter, as on a reboot: it installs its own filter on top
    /// and does its ordinary work.
    fn stacked(kind: ThreadKind) {
        let vmm = std::thread::spawn(move || {
            apply(ThreadKind::Vmm).unwrap();
            let inner = std::thread::Builder::new()
                .name(kind.name().into())
                .spawn(move || {
                    apply(kind).unwrap();
                    let v = vec![0u8; 1 << 20];
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    eprintln!("stacked {} {}", kind.name(), v.len());
                })
                .unwrap();
            inner.join().unwrap();
        });
        vmm.join().unwrap();
        eprintln!("child exits");
    }

    /// Print `LABEL MODE` for the thread named `comm`: its Seccomp: line
    /// of /proc (2: a filter is installed).
    fn print_seccomp_mode(label: &str, comm: &str) {
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let task = task.unwrap().path();
            let name = std::fs::read_to_string(task.join("comm")).unwrap();
            if name.trim() == comm {
                let status = std::fs::read_to_string(task.join("status")).unwrap();
                let seccomp = status.lines().find(|l| l.starts_with("Seccomp:")).unwrap();
                eprintln!("{label} {}", seccomp.split_whitespace().last().unwrap());
            }
        }
    }

    /// The emulated backend's own engine thread, started through the devices
    /// crate's hook: print its seccomp state, run it a while, stop it.
    fn real_engine() {
        use devices::emulated::EmulatedBackend;
        use devices::emulated::cmdqv::{EmulatedCmdqv, EmulatedCmdqvConfig};
        use vm_memory::GuestAddress;
        let mem =
            devices::GuestMemory::from_ranges(&[(GuestAddress(0x4000_0000), 0x10_0000)]).unwrap();
        let config = EmulatedCmdqvConfig {
            mapped: true,
            ..EmulatedCmdqvConfig::default()
        };
        let irq = std::sync::Arc::new(devices::irq::NoInterrupts);
        let backend = EmulatedCmdqv::new(EmulatedBackend::new(), mem, irq, config).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        print_seccomp_mode("engine", "vcmdq-engine");
        drop(backend);
        eprintln!("child exits");
    }

    /// A virtio-blk function built by a thread under the VMM filter (its
    /// workers start there), driven from a thread under the vCPU filter
    /// (DRIVER_OK, the trapped notify), its worker writing 9s over sector
    /// 1 (`write`) or reading them back (the image holds them already)
    /// under its own: print the worker's seccomp state, the status the
    /// device answered, the requests served through io_uring and whether
    /// sector 1 holds 9s (in the image after a write, in the guest's
    /// buffer after a read). `options` follow the disk's path.
    fn real_virtio(options: &'static str, write: bool) {
        use crate::config::{DiskConfig, VmConfig};
        use crate::description::VmDescription;
        use vm_memory::GuestAddress;
        let image = vmm_sys_util::tempfile::TempFile::new().unwrap();
        image.as_file().set_len(4096).unwrap();
        if !write {
            std::os::unix::fs::FileExt::write_all_at(image.as_file(), &[9; 512], 512).unwrap();
        }
        let path = image.as_path().display().to_string();
        let vmm = std::thread::spawn(move || {
            apply(ThreadKind::Vmm).unwrap();
            let config = VmConfig {
                disks: vec![DiskConfig::parse(&format!("path={path}{options}"), 0).unwrap()],
                ..VmConfig::default()
            };
            let host = crate::host_topology::HostTopology::emulated(&config, 4 << 10);
            let vm = VmDescription::new(config, &host, 16).unwrap();
            let mem = devices::GuestMemory::from_ranges(&[(GuestAddress(0x4000_0000), 0x10_0000)])
                .unwrap();
            let wiring = crate::virtio::test_support::wiring();
            let (mut function, counters) =
                crate::virtio::block(&vm, &vm.devices[0], &mem, &wiring).unwrap();
            let vcpu = std::thread::spawn(move || {
                apply(ThreadKind::Vcpu).unwrap();
                if write {
                    let status =
                        crate::virtio::test_support::write_sector(&mut *function, &mem, 1, 9);
                    eprintln!("status {status}");
                } else {
                    let (status, data) =
                        crate::virtio::test_support::read_sector(&mut *function, &mem, 1);
                    eprintln!("status {status}");
                    eprintln!("read {}", data.iter().all(|b| *b == 9));
                }
                function
            });
            let function = vcpu.join().unwrap();
            print_seccomp_mode("worker", "_disk0-q0");
            drop(function);
            let uring_ops = counters
                .uring_ops
                .load(std::sync::atomic::Ordering::Relaxed);
            eprintln!("uring ops {uring_ops}");
        });
        vmm.join().unwrap();
        let mut back = [0u8; 512];
        std::os::unix::fs::FileExt::read_exact_at(image.as_file(), &mut back, 512).unwrap();
        eprintln!("image {}", back.iter().all(|b| *b == 9));
        eprintln!("child exits");
    }

    /// A virtio-net function with two queue pairs built by a thread under
    /// the VMM filter: the tap's two queues created, given an address,
    /// brought up, probed for offloads, pair 1 detached, its workers
    /// started; then driven from a thread under the vCPU filter (DRIVER_OK
    /// with offloads, VQ_PAIRS_SET on the control queue served by its
    /// worker under its own filter, reset, DRIVER_OK again).
    fn real_net() {
        use crate::config::{NetConfig, VmConfig};
        use crate::description::VmDescription;
        use vm_memory::GuestAddress;
        let vmm = std::thread::spawn(move || {
            apply(ThreadKind::Vmm).unwrap();
            let config = VmConfig {
                net: vec![
                    NetConfig::parse(
                        "tap=chsec%d,ip=192.168.252.1,mask=255.255.255.0,num_queues=4",
                        0,
                    )
                    .unwrap(),
                ],
                ..VmConfig::default()
            };
            let host = crate::host_topology::HostTopology::emulated(&config, 4 << 10);
            let vm = VmDescription::new(config, &host, 16).unwrap();
            let mem = devices::GuestMemory::from_ranges(&[(GuestAddress(0x4000_0000), 0x10_0000)])
                .unwrap();
            let wiring = crate::virtio::test_support::wiring();
            match crate::virtio::net(&vm, &vm.devices[0], &mem, &wiring) {
                Ok((mut function, _counters)) => {
                    eprintln!("net built true");
                    let vcpu = std::thread::spawn(move || {
                        apply(ThreadKind::Vcpu).unwrap();
                        let status =
                            crate::virtio::test_support::net_pairs_set(&mut *function, &mem);
                        eprintln!("pairs status {status}");
                        function
                    });
                    let function = vcpu.join().unwrap();
                    print_seccomp_mode("worker", "_net0-ctl");
                    drop(function);
                }
                Err(e) => eprintln!("net failed: {e}"),
            }
        });
        vmm.join().unwrap();
        eprintln!("child exits");
    }

    /// A vsock proxy started by a thread under the VMM filter (its thread
    /// installs the proxy's filter on top) serves a client: accepts it,
    /// reads its CONNECT line, makes and connects an AF_VSOCK socket to
    /// the guest CID (nothing there on a test host: refused) and writes
    /// the answer line; print the thread's seccomp state and the answer.
    fn real_vsock_proxy() {
        use std::io::{BufRead, Write};
        use virtio_devices::vsock::{Proxy, VhostPorts};
        let dir = std::env::temp_dir().join(format!("ch-seccomp-vsock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vsock.sock");
        let at = path.clone();
        // Started under the VMM filter; the client below is this
        // (unfiltered) thread.
        let proxy = std::thread::spawn(move || {
            apply(ThreadKind::Vmm).unwrap();
            Proxy::start("_vsock0-proxy".into(), &at, VhostPorts { cid: 3 }).unwrap()
        })
        .join()
        .unwrap();
        let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        client.write_all(b"CONNECT 1\n").unwrap();
        let mut line = String::new();
        std::io::BufReader::new(&client)
            .read_line(&mut line)
            .unwrap();
        print_seccomp_mode("proxy", "_vsock0-proxy");
        eprintln!("answer {}", line.split(' ').next().unwrap_or_default());
        drop(proxy);
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!("child exits");
    }

    fn refused(kind: ThreadKind, probe: Probe, syscall: i64) {
        let (status, out) = run_child(kind, "true", probe);
        assert_eq!(
            status.signal(),
            Some(libc::SIGSYS),
            "{kind:?} {probe:?}: {out}"
        );
        assert!(out.contains(&format!("filtered {}", kind.name())), "{out}");
        assert!(!out.contains("survived"), "{out}");
        let line = format!(
            "seccomp: the {} thread made system call {syscall}, which its filter refuses",
            kind.name()
        );
        assert!(out.contains(&line), "{kind:?} {probe:?}: {out}");
    }

    #[test]
    fn true_kills_the_vmm_on_a_forbidden_syscall_from_every_thread_kind() {
        for kind in ThreadKind::ALL {
            refused(kind, Probe::Forbidden, libc::SYS_getppid);
        }
    }

    #[test]
    fn true_lets_every_thread_kind_do_its_ordinary_work_and_exit() {
        for kind in ThreadKind::ALL {
            let (status, out) = run_child(kind, "true", Probe::Allowed);
            assert!(status.success(), "{kind:?}: {out}");
            assert!(out.contains("child exits"), "{out}");
        }
    }

    #[test]
    fn no_thread_maps_executable_memory_and_a_vcpu_opens_no_file() {
        for kind in ThreadKind::ALL {
            refused(kind, Probe::ExecMap, libc::SYS_mmap);
        }
        refused(ThreadKind::Vcpu, Probe::Open, libc::SYS_openat);
        refused(ThreadKind::Api, Probe::Open, libc::SYS_openat);
    }

    #[test]
    fn log_lets_a_forbidden_syscall_run_and_false_filters_nothing() {
        for mode in ["log", "false"] {
            for kind in ThreadKind::ALL {
                let (status, out) = run_child(kind, mode, Probe::Forbidden);
                assert!(status.success(), "{mode} {kind:?}: {out}");
                assert!(out.contains(&format!("survived {}", kind.name())), "{out}");
                assert!(!out.contains("which its filter refuses"), "{out}");
            }
        }
    }

    #[test]
    fn the_emulated_backends_engine_thread_installs_its_filter_through_the_devices_hook() {
        let (status, out) = run_child(ThreadKind::VcmdqEngine, "true", Probe::RealEngine);
        assert!(status.success(), "{out}");
        // 2: SECCOMP_MODE_FILTER; the engine ran, stopped and was joined.
        assert!(out.contains("engine 2"), "{out}");
        assert!(out.contains("child exits"), "{out}");
        let (status, out) = run_child(ThreadKind::VcmdqEngine, "false", Probe::RealEngine);
        assert!(status.success() && out.contains("engine 0"), "{out}");
    }

    /// Needs io_uring on the host: without it the disk falls back to
    /// preadv and the test fails on `uring ops 1`, saying so.
    #[test]
    fn a_virtio_worker_serves_disk_io_under_its_filter_stacked_on_the_vmms() {
        // (The read's 9s in the guest's buffer; the write's in the image.)
        for (probe, uring_ops, nines) in [
            (Probe::RealVirtio, 1, "read true"),
            (Probe::RealVirtioSync, 0, "image true"),
        ] {
            let (status, out) = run_child(ThreadKind::VirtioWorker, "true", probe);
            assert!(status.success(), "{out}");
            assert!(out.contains("status 0"), "{out}");
            assert!(out.contains("worker 2"), "{out}");
            assert!(out.contains(nines), "{out}");
            assert!(out.contains(&format!("uring ops {uring_ops}")), "{out}");
            assert!(out.contains("child exits"), "{out}");
        }
    }

    #[test]
    #[ignore = "needs /dev/net/tun and CAP_NET_ADMIN"]
    fn the_vmm_thread_opens_and_configures_a_tap_under_its_filter() {
        let (status, out) = run_child(ThreadKind::Vmm, "true", Probe::RealNet);
        assert!(status.success(), "{out}");
        assert!(out.contains("net built true"), "{out}");
        assert!(out.contains("pairs status 0"), "VIRTIO_NET_OK: {out}");
        assert!(
            out.contains("worker 2"),
            "the control queue worker is filtered: {out}"
        );
        assert!(out.contains("child exits"), "{out}");
    }

    #[test]
    fn a_vsock_proxy_serves_a_client_under_its_filter_stacked_on_the_vmms() {
        let (status, out) = run_child(ThreadKind::VsockProxy, "true", Probe::RealVsockProxy);
        assert!(status.success(), "{out}");
        assert!(out.contains("proxy 2"), "{out}");
        // No guest here: the connect to CID 3 fails, so the error line.
        assert!(out.contains("answer ERROR"), "{out}");
        assert!(out.contains("child exits"), "{out}");
    }

    #[test]
    fn threads_spawned_under_the_vmm_filter_install_theirs_and_work_under_true() {
        for kind in [
            ThreadKind::Vcpu,
            ThreadKind::VcmdqEngine,
            ThreadKind::ConsoleIn,
            ThreadKind::VirtioWorker,
            ThreadKind::VsockProxy,
        ] {
            let (status, out) = run_child(kind, "true", Probe::Stacked);
            assert!(status.success(), "{kind:?}: {out}");
            assert!(out.contains(&format!("stacked {}", kind.name())), "{out}");
        }
    }
}
